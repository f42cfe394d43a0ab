"""``imgq train``, ``imgq evaluate`` and ``imgq models``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from imgq.config import get_settings
from imgq.db.engine import session_scope
from imgq.db.migrate import require_current

if TYPE_CHECKING:
    import keras

    from imgq.models.datasets import Dataset
    from imgq.models.training import TrainingResult

DATASETS = ("digits", "mnist", "folder")


def _runs_dir(name: str) -> Path:
    return get_settings().data_dir / "runs" / name


@click.command("train")
@click.option(
    "--dataset",
    type=click.Choice(DATASETS),
    default="digits",
    show_default=True,
    help="digits: offline 8x8 digits at 28x28; mnist; folder: one subfolder per class.",
)
@click.option(
    "--data-path",
    type=click.Path(exists=True),
    default=None,
    help="mnist.npz or IDX folder for mnist; the root folder for folder.",
)
@click.option(
    "--arch",
    "architecture",
    type=click.Choice(["cnn", "mlp"]),
    default="cnn",
    show_default=True,
    help="Network architecture.",
)
@click.option(
    "--image-size",
    type=click.IntRange(min=8),
    default=28,
    show_default=True,
    help="Height and width of the model input (folder dataset).",
)
@click.option(
    "--channels",
    type=click.Choice(["1", "3"]),
    default="1",
    show_default=True,
    help="1 for greyscale, 3 for colour (folder dataset).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Most epochs to run.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Training examples per gradient step.",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Epochs without a better validation loss before stopping; 0 runs every epoch.",
)
@click.option(
    "--seed",
    type=int,
    default=42,
    show_default=True,
    help="Seed of the split and of the weights, for reproducible runs.",
)
@click.option(
    "--promote/--no-promote",
    default=None,
    help="Give the new version the 'production' alias (default: only "
    "when no version has it yet).",
)
def train_command(
    dataset: str,
    data_path: str | None,
    architecture: str,
    image_size: int,
    channels: str,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    promote: bool | None,
) -> None:
    """Train a model, evaluate it on the test part and register it as a version.

    Writes the learning curves, the confusion matrix and the sample, prediction
    and wrong-prediction grids under <data_dir>/runs/<model name>/.
    """
    from imgq.models.datasets import load_dataset
    from imgq.models.evaluation import evaluate
    from imgq.models.preprocessing import PreprocessSpec
    from imgq.models.training import train

    require_current()
    spec = PreprocessSpec(height=image_size, width=image_size, channels=int(channels))
    data = load_dataset(dataset, path=data_path, spec=spec)
    if data.skipped:
        click.echo(f"skipped {data.skipped} unreadable image(s); see the warnings")

    # figures go to a private folder until the version, and so its name, exists
    staging = _runs_dir(f".{architecture}-{dataset}-{uuid.uuid4().hex[:12]}")
    staging.mkdir(parents=True)
    result = train(
        data,
        architecture=architecture,
        output_dir=staging,
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        patience=patience,
    )
    evaluation = evaluate(
        result.model,
        result.split.x_test,
        result.split.y_test,
        class_names=data.class_names,
        output_dir=staging,
    )

    metrics = (
        evaluation.metrics()
        | _training_metrics(result)
        | {
            "seed": seed,
            "dataset": dataset,
            "data_path": str(Path(data_path).resolve()) if data_path else None,
            "skipped_images": data.skipped,
        }
    )
    version_id, name = _register(result.model, data, architecture, metrics, promote)
    run_dir = _runs_dir(name)
    staging.rename(run_dir)
    _echo_training_summary(version_id, name, metrics, run_dir)


def _training_metrics(result: TrainingResult) -> dict[str, Any]:
    """Epoch counts, and the train and validation figures of the kept weights."""
    kept = result.kept_epoch - 1
    history = result.history
    return {
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "kept_epoch": result.kept_epoch,
        "train_seconds": round(result.seconds, 2),
        "train_accuracy": history["accuracy"][kept],
        "validation_accuracy": history["val_accuracy"][kept],
        "train_loss": history["loss"][kept],
        "validation_loss": history["val_loss"][kept],
    }


def _register(
    model: keras.Model,
    data: Dataset,
    architecture: str,
    metrics: dict[str, Any],
    promote: bool | None,
) -> tuple[int, str]:
    """Save and register the model; promote it if asked or if it is the first."""
    from imgq.models import registry

    with session_scope() as session:
        version = registry.save_and_register(
            session,
            model,
            model_dir=get_settings().resolved_model_dir,
            architecture=architecture,
            dataset_name=data.name,
            class_names=data.class_names,
            spec=data.spec,
            metrics=metrics,
            data_fingerprint=data.fingerprint,
        )
        has_production = any(
            registry.PRODUCTION in aliases
            for aliases in registry.aliases_by_version(session).values()
        )
        if promote or (promote is None and not has_production):
            registry.promote(session, version.id)
        return version.id, version.name


def _echo_training_summary(
    version_id: int, name: str, metrics: dict[str, Any], run_dir: Path
) -> None:
    click.echo(f"model version {version_id}: {name}")
    click.echo(
        f"  epochs {metrics['epochs_run']} (lowest validation loss at "
        f"{metrics['best_epoch']}, weights of epoch {metrics['kept_epoch']}), "
        f"{metrics['train_seconds']:.1f} s"
    )
    click.echo(
        f"  train accuracy {metrics['train_accuracy']:.4f}, validation accuracy "
        f"{metrics['validation_accuracy']:.4f}, "
        f"train loss {metrics['train_loss']:.4g}, "
        f"validation loss {metrics['validation_loss']:.4g}"
    )
    click.echo(
        f"  test loss {metrics['test_loss']:.4g}, "
        f"test accuracy {metrics['test_accuracy']:.4f}"
    )
    click.echo(f"  figures in {run_dir}")


@click.command("evaluate")
@click.option(
    "--model",
    "reference",
    default="production",
    show_default=True,
    help="Model version number or alias.",
)
@click.option(
    "--dataset",
    type=click.Choice(DATASETS),
    default=None,
    help="Dataset to test on (default: the one the model was trained on).",
)
@click.option(
    "--data-path",
    type=click.Path(exists=True),
    default=None,
    help="mnist.npz or IDX folder for mnist; the root folder for folder "
    "(default: the path the model was trained on).",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the figures (default: <data_dir>/runs/<model>/evaluate).",
)
def evaluate_command(
    reference: str, dataset: str | None, data_path: str | None, output: str | None
) -> None:
    """Evaluate a registered model on the test part of its dataset's split.

    Prints loss, accuracy and per-class precision and recall; writes the
    confusion matrix and the sample, prediction and wrong-prediction grids.
    """
    from imgq.models import registry
    from imgq.models.datasets import load_dataset, split
    from imgq.models.evaluation import evaluate

    require_current()
    with session_scope() as session:
        version = registry.resolve(session, reference)
    loaded = registry.load(version)
    trained_on = str(version.metrics.get("dataset", "digits"))
    if data_path is None and dataset in (None, trained_on):
        data_path = version.metrics.get("data_path")
    dataset = dataset or trained_on
    data = load_dataset(dataset, path=data_path, spec=loaded.spec)
    parts = split(data, seed=int(version.metrics.get("seed", 42)))
    output_dir = Path(output) if output else _runs_dir(version.name) / "evaluate"
    evaluation = evaluate(
        loaded.model,
        parts.x_test,
        parts.y_test,
        class_names=loaded.class_names,
        output_dir=output_dir,
    )
    click.echo(
        f"model version {version.id} on the {dataset} test part "
        f"({len(parts.y_test)} images)"
    )
    click.echo(f"  loss {evaluation.loss:.4f}  accuracy {evaluation.accuracy:.4f}")
    click.echo(f"  {'class':>10} {'precision':>10} {'recall':>8} {'support':>8}")
    for name, figures in evaluation.per_class.items():
        click.echo(
            f"  {name:>10} {figures['precision']:>10.3f} "
            f"{figures['recall']:>8.3f} {figures['support']:>8d}"
        )
    click.echo(f"  figures in {output_dir}")


@click.group("models")
def models_group() -> None:
    """List, inspect and promote registered model versions."""


@models_group.command("list")
def list_command() -> None:
    """One line per version: number, aliases, name, test accuracy."""
    from imgq.models import registry

    require_current()
    with session_scope() as session:
        aliases = registry.aliases_by_version(session)
        versions = registry.list_versions(session)
        if not versions:
            click.echo("no model versions yet; run 'imgq train'")
        for version in versions:
            accuracy = version.metrics.get("test_accuracy")
            shown = f"{accuracy:.4f}" if isinstance(accuracy, float) else "-"
            tags = ",".join(aliases.get(version.id, [])) or "-"
            click.echo(
                f"{version.id:>4}  {tags:<12} {version.name:<48} test accuracy {shown}"
            )


@models_group.command("show")
@click.argument("reference")
def show_command(reference: str) -> None:
    """Print a version's metadata as JSON."""
    from imgq.models import registry

    require_current()
    with session_scope() as session:
        version = registry.resolve(session, reference)
        click.echo(json.dumps(registry.metadata_of(version), indent=2))


@models_group.command("promote")
@click.argument("reference")
@click.option(
    "--alias",
    default="production",
    show_default=True,
    help="The alias to move to this version.",
)
@click.option(
    "--reinfer",
    "then_reinfer",
    is_flag=True,
    help="Then queue every stored image this version has not answered yet "
    "(what 'imgq reinfer --model VERSION' does).",
)
def promote_command(reference: str, alias: str, then_reinfer: bool) -> None:
    """Give REFERENCE (a version number) the alias; rolling back is the same."""
    from imgq.models import registry

    require_current()
    with session_scope() as session:
        version = registry.resolve(session, reference)
        registry.verify_file(version)
        registry.promote(session, version.id, alias)
        click.echo(f"model version {version.id} ({version.name}) is now {alias!r}")
        version_id = version.id
    if then_reinfer:
        from imgq.worker.reinfer import reinfer
        from imgq.worker.reinfer_cli import print_reinfer_result

        print_reinfer_result(reinfer(model_reference=str(version_id)))


# Pixel offsets of the exported copies, smallest first: the first copy is the
# digits as they are, every other copy is a distinct image.
COPY_OFFSETS = sorted(
    ((rows, columns) for rows in range(-3, 4) for columns in range(-3, 4)),
    key=lambda offset: (abs(offset[0]) + abs(offset[1]), offset),
)


@click.command("export-digits")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option(
    "--copies",
    type=click.IntRange(1, len(COPY_OFFSETS)),
    default=1,
    show_default=True,
    help="Write the 1,797 digits this many times (the first as they are, the "
    "others shifted by a few pixels, so every copy is a distinct image).",
)
def export_digits_command(folder: str, copies: int) -> None:
    """Write scikit-learn's digits as 28x28 PNG files in class subfolders.

    Also writes FOLDER/manifest.csv (path,label). The files hold the pixels the
    digits model trains on, so they make an offline test set for the pipeline.
    """
    import csv

    import numpy as np
    from PIL import Image

    from imgq.models.datasets import digit_images

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    images = list(digit_images())
    with open(root / "manifest.csv", "w", newline="") as manifest_file:
        manifest = csv.writer(manifest_file)
        manifest.writerow(["path", "label"])
        for copy, offset in enumerate(COPY_OFFSETS[:copies]):
            for number, (image, label) in enumerate(images):
                pixels = np.roll(np.asarray(image), offset, axis=(0, 1))
                path = root / str(label) / f"digit-{copy:03d}-{number:04d}.png"
                path.parent.mkdir(exist_ok=True)
                Image.fromarray(pixels).save(path)
                manifest.writerow([str(path.relative_to(root)), label])
    click.echo(f"wrote {copies * len(images)} images and manifest.csv to {root}")


commands = [train_command, evaluate_command, models_group, export_digits_command]
