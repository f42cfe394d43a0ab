"""Saved models as versions in the database, with aliases and a hash check.

A saved model is a ``.keras`` file and a ``.json`` file of metadata beside it;
its registered row carries the same metadata and the file's SHA-256, which is
checked again every time the model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import imgq
from imgq.db.schema import ModelAlias, ModelVersion
from imgq.errors import ModelError, ModelIntegrityError
from imgq.models.preprocessing import PreprocessSpec

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

PRODUCTION = "production"


@dataclass
class LoadedModel:
    """A model ready for inference and the version it came from."""

    version_id: int
    name: str
    model: keras.Model
    spec: PreprocessSpec
    class_names: list[str]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_and_register(
    session: Session,
    model: keras.Model,
    *,
    model_dir: Path,
    architecture: str,
    dataset_name: str,
    class_names: list[str],
    spec: PreprocessSpec,
    metrics: dict[str, Any],
    data_fingerprint: str,
) -> ModelVersion:
    """Write ``model`` and its metadata to ``model_dir`` and register a version."""
    model_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    safe_dataset = dataset_name.replace(":", "-").replace("/", "-")
    name = f"{architecture}-{safe_dataset}-{stamp}"
    path = (model_dir / f"{name}.keras").resolve()
    model.save(path)
    return register_file(
        session,
        path,
        name=name,
        architecture=architecture,
        class_names=class_names,
        spec=spec,
        metrics=metrics,
        data_fingerprint=data_fingerprint,
    )


def register_file(
    session: Session,
    path: Path,
    *,
    name: str,
    architecture: str,
    class_names: list[str],
    spec: PreprocessSpec,
    metrics: dict[str, Any],
    data_fingerprint: str,
) -> ModelVersion:
    """Register a saved ``.keras`` file as a new version; writes its metadata."""
    version = ModelVersion(
        name=name,
        architecture=architecture,
        path=str(Path(path).resolve()),
        content_hash=file_sha256(path),
        class_names=list(class_names),
        input_shape=list(spec.input_shape),
        preprocessing=spec.to_dict(),
        metrics=metrics,
        data_fingerprint=data_fingerprint,
        imgq_version=imgq.__version__,
    )
    session.add(version)
    session.flush()
    Path(path).with_suffix(".json").write_text(
        json.dumps(metadata_of(version), indent=2)
    )
    log.info("registered model version %d %r at %s", version.id, name, path)
    return version


def metadata_of(version: ModelVersion) -> dict[str, Any]:
    return {
        "version": version.id,
        "name": version.name,
        "architecture": version.architecture,
        "class_names": version.class_names,
        "input_shape": version.input_shape,
        "preprocessing": version.preprocessing,
        "metrics": version.metrics,
        "content_hash": version.content_hash,
        "data_fingerprint": version.data_fingerprint,
        "imgq_version": version.imgq_version,
    }


def resolve(session: Session, reference: str | int) -> ModelVersion:
    """The version called ``reference``: a number (``3`` or ``v3``) or an alias."""
    text = str(reference).strip()
    number = _version_number(text)
    if number is not None:
        version = session.get(ModelVersion, number)
        if version is None:
            raise ModelError(f"no model version {number}; see 'imgq models list'")
        return version
    alias = session.get(ModelAlias, text)
    if alias is None:
        raise ModelError(
            f"no model holds the alias {text!r}; train one and "
            "'imgq models promote VERSION'"
        )
    version = session.get(ModelVersion, alias.model_version_id)
    assert version is not None  # the foreign key guarantees it
    return version


def _version_number(reference: str) -> int | None:
    """The number in ``3`` or ``v3``; None for anything else (an alias)."""
    text = reference.strip()
    if text[:1] in ("v", "V"):
        text = text[1:]
    return int(text) if text.isascii() and text.isdigit() else None


def promote(
    session: Session, reference: str | int, alias: str = PRODUCTION
) -> ModelVersion:
    """Point ``alias`` at the version ``reference``; returns that version."""
    if _version_number(alias) is not None or not alias.strip():
        raise ModelError(
            f"{alias!r} cannot be an alias: it would read as a version number"
            if alias.strip()
            else "an alias needs a name"
        )
    version = resolve(session, reference)
    existing = session.get(ModelAlias, alias)
    if existing is None:
        session.add(ModelAlias(alias=alias, model_version_id=version.id))
    else:
        existing.model_version_id = version.id
        existing.updated_at = datetime.now(UTC)
    session.flush()
    log.info("alias %r now points at model version %d", alias, version.id)
    return version


def aliases_by_version(session: Session) -> dict[int, list[str]]:
    result: dict[int, list[str]] = {}
    for alias in session.scalars(select(ModelAlias).order_by(ModelAlias.alias)):
        result.setdefault(alias.model_version_id, []).append(alias.alias)
    return result


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def verify_file(version: ModelVersion) -> None:
    """Raise unless the model file exists and has its registered hash."""
    path = Path(version.path)
    if not path.is_file():
        raise ModelError(f"model version {version.id}: file {path} is missing")
    actual = file_sha256(path)
    if actual != version.content_hash:
        raise ModelIntegrityError(
            f"model version {version.id}: {path} has hash {actual[:12]}..., "
            f"registered {version.content_hash[:12]}...; the file was changed "
            "or is corrupt"
        )


def load(version: ModelVersion) -> LoadedModel:
    """Load a registered version for inference, after checking its hash."""
    import keras

    verify_file(version)
    try:
        model = keras.saving.load_model(version.path, compile=False)
    except Exception as error:
        raise ModelError(
            f"model version {version.id}: {version.path} cannot be loaded: {error}"
        ) from error
    return LoadedModel(
        version_id=version.id,
        name=version.name,
        model=model,
        spec=PreprocessSpec.from_dict(version.preprocessing),
        class_names=[str(name) for name in version.class_names],
    )
