"""Operations: Prometheus metrics, the cluster exporter, health and readiness."""
