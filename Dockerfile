# One image for every imgq service: worker, beat, exporter and the CLI.
# The GPU build adds TensorFlow's CUDA libraries; the default build is CPU only.
FROM python:3.11-slim

ARG IMGQ_EXTRAS=postgres
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    IMGQ_DATA_DIR=/var/lib/imgq

WORKDIR /opt/imgq
COPY pyproject.toml README.md ./
COPY imgq ./imgq
RUN pip install ".[${IMGQ_EXTRAS}]" \
    && useradd --system --home /var/lib/imgq imgq \
    && mkdir -p /var/lib/imgq /data \
    && chown imgq /var/lib/imgq

USER imgq
ENTRYPOINT ["imgq"]
CMD ["--help"]
