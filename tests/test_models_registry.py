"""The model registry on SQLite and PostgreSQL: versions, aliases, hash checks."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from imgq.db.engine import session_scope
from imgq.db.schema import ModelAlias
from imgq.errors import ModelError, ModelIntegrityError
from imgq.models import architectures, registry
from imgq.models.preprocessing import PreprocessSpec

SMALL_SPEC = PreprocessSpec(height=8, width=8, channels=1)


def register_copy(source: Path, folder: Path, name: str) -> int:
    """Register a copy of a saved model file as a new version."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / f"{name}.keras"
    shutil.copy(source, copy)
    with session_scope() as session:
        version = registry.register_file(
            session,
            copy,
            name=name,
            architecture="cnn",
            class_names=[str(digit) for digit in range(10)],
            spec=PreprocessSpec(height=28, width=28, channels=1),
            metrics={"dataset": "digits"},
            data_fingerprint="0" * 64,
        )
        return version.id


def model_path(version_id: int) -> Path:
    with session_scope() as session:
        return Path(registry.resolve(session, version_id).path)


def test_saved_model_is_registered_with_its_metadata_and_hash(
    migrated: str, tmp_path: Path
) -> None:
    model = architectures.build("mlp", input_shape=(8, 8, 1), class_count=2)

    with session_scope() as session:
        version = registry.save_and_register(
            session,
            model,
            model_dir=tmp_path / "models",
            architecture="mlp",
            dataset_name="folder:parts",
            class_names=["defective", "ok"],
            spec=SMALL_SPEC,
            metrics={"test_accuracy": 0.5},
            data_fingerprint="f" * 64,
        )
        version_id, path = version.id, Path(version.path)

    metadata = json.loads(path.with_suffix(".json").read_text())
    assert path.parent == (tmp_path / "models").resolve()
    assert path.name.startswith("mlp-folder-parts-")
    assert metadata["version"] == version_id
    assert metadata["class_names"] == ["defective", "ok"]
    assert metadata["input_shape"] == [8, 8, 1]
    assert metadata["preprocessing"] == SMALL_SPEC.to_dict()
    assert metadata["content_hash"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_version_resolves_by_number_by_v_number_and_by_alias(
    model_version: int,
) -> None:
    with session_scope() as session:
        found = [
            registry.resolve(session, reference).id
            for reference in (model_version, str(model_version), f"v{model_version}")
        ]
        found.append(registry.resolve(session, registry.PRODUCTION).id)

    assert found == [model_version] * 4


@pytest.mark.parametrize("reference", ["99", "v99", "staging", "-1"])
def test_unknown_reference_raises_model_error(migrated: str, reference: str) -> None:
    with session_scope() as session, pytest.raises(ModelError):
        registry.resolve(session, reference)


def test_promote_moves_the_alias_so_one_version_holds_it(
    model_version: int, digits_model_file: dict[str, object], tmp_path: Path
) -> None:
    source = Path(str(digits_model_file["path"]))
    newer = register_copy(source, tmp_path / "models", "digits-cnn-newer")

    with session_scope() as session:
        registry.promote(session, newer)
        registry.promote(session, model_version, "staging")
    with session_scope() as session:
        holders = session.scalar(
            select(func.count())
            .select_from(ModelAlias)
            .where(ModelAlias.alias == registry.PRODUCTION)
        )
        production = registry.resolve(session, registry.PRODUCTION).id
        aliases = registry.aliases_by_version(session)

    assert holders == 1
    assert production == newer
    assert aliases == {model_version: ["staging"], newer: ["production"]}


def test_promoting_back_is_a_rollback(
    model_version: int, digits_model_file: dict[str, object], tmp_path: Path
) -> None:
    source = Path(str(digits_model_file["path"]))
    newer = register_copy(source, tmp_path / "models", "digits-cnn-newer")

    with session_scope() as session:
        registry.promote(session, newer)
    with session_scope() as session:
        registry.promote(session, f"v{model_version}")
    with session_scope() as session:
        assert registry.resolve(session, registry.PRODUCTION).id == model_version


def test_load_checks_the_hash_and_gives_a_working_model(model_version: int) -> None:
    with session_scope() as session:
        version = registry.resolve(session, model_version)

    loaded = registry.load(version)
    probabilities = loaded.model.predict(
        np.zeros((2, 28, 28, 1), dtype=np.float32), verbose=0
    )

    assert loaded.version_id == model_version
    assert loaded.class_names == [str(digit) for digit in range(10)]
    assert loaded.spec.input_shape == (28, 28, 1)
    assert probabilities.shape == (2, 10)


def test_model_file_changed_by_one_byte_raises_integrity_error(
    model_version: int,
) -> None:
    path = model_path(model_version)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    with session_scope() as session:
        version = registry.resolve(session, model_version)
    with pytest.raises(ModelIntegrityError, match="hash"):
        registry.load(version)


def test_missing_model_file_raises_model_error(model_version: int) -> None:
    model_path(model_version).unlink()

    with session_scope() as session:
        version = registry.resolve(session, model_version)
    with pytest.raises(ModelError, match="missing") as caught:
        registry.load(version)

    assert not isinstance(caught.value, ModelIntegrityError)


def test_registered_file_that_is_no_model_raises_model_error_on_load(
    migrated: str, tmp_path: Path
) -> None:
    garbage = tmp_path / "not-a-model.keras"
    garbage.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with session_scope() as session:
        version = registry.register_file(
            session,
            garbage,
            name="garbage",
            architecture="cnn",
            class_names=["a", "b"],
            spec=SMALL_SPEC,
            metrics={},
            data_fingerprint="0" * 64,
        )

    with pytest.raises(ModelError, match="cannot be loaded"):
        registry.load(version)


@pytest.mark.parametrize("alias", ["7", "v7", "  "])
def test_alias_that_reads_as_a_version_number_is_refused(
    model_version: int, alias: str
) -> None:
    with session_scope() as session, pytest.raises(ModelError, match="alias"):
        registry.promote(session, model_version, alias)
