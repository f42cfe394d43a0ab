"""Training and evaluation on the digits: kept weights, curves, the tutorial's
overfitting MLP and its accurate CNN."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from imgq.models.datasets import Dataset, load_digits_dataset
from imgq.models.evaluation import evaluate
from imgq.models.training import TrainingResult, one_hot, train


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits_dataset()


def assert_is_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) > 100


@pytest.fixture(scope="module")
def overfit_mlp(
    digits: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> TrainingResult:
    """The tutorial's MLP trained for 30 epochs with early stopping off."""
    return train(
        digits,
        architecture="mlp",
        output_dir=tmp_path_factory.mktemp("mlp"),
        epochs=30,
        patience=0,
    )


def kept_validation_loss(result: TrainingResult, class_count: int) -> float:
    """The validation loss of the weights the trained model holds."""
    loss = result.model.evaluate(
        result.split.x_validation,
        one_hot(result.split.y_validation, class_count),
        verbose=0,
    )[0]
    return float(loss)


def test_without_patience_every_epoch_runs_and_the_last_weights_are_kept(
    overfit_mlp: TrainingResult,
) -> None:
    kept_loss = kept_validation_loss(overfit_mlp, class_count=10)

    assert overfit_mlp.epochs_run == 30
    assert overfit_mlp.kept_epoch == 30
    assert kept_loss == pytest.approx(overfit_mlp.history["val_loss"][-1], rel=1e-4)


def test_early_stopping_keeps_the_weights_of_the_best_validation_loss(
    digits: Dataset, tmp_path: Path
) -> None:
    result = train(
        digits, architecture="mlp", output_dir=tmp_path, epochs=40, patience=2
    )
    kept_loss = kept_validation_loss(result, class_count=10)
    losses = result.history["val_loss"]

    assert result.epochs_run < 40
    assert result.kept_epoch == result.best_epoch == int(np.argmin(losses)) + 1
    assert kept_loss == pytest.approx(min(losses), rel=1e-4)


def test_learning_curves_are_drawn_for_train_and_validation(
    overfit_mlp: TrainingResult,
) -> None:
    assert overfit_mlp.curves_path.name == "learning_curves.png"
    assert_is_png(overfit_mlp.curves_path)
    assert set(overfit_mlp.history) >= {"loss", "val_loss", "accuracy", "val_accuracy"}


@pytest.mark.slow
def test_the_mlp_overfits_as_in_the_tutorial(overfit_mlp: TrainingResult) -> None:
    history = overfit_mlp.history
    best = overfit_mlp.best_epoch - 1
    last_ten = slice(-10, None)

    # past its best epoch, train loss keeps falling while validation loss
    # turns back up, and train accuracy stays above validation accuracy
    assert best < 20
    assert np.median(history["loss"][last_ten]) < 0.5 * history["loss"][best]
    assert np.median(history["val_loss"][last_ten]) > 1.2 * history["val_loss"][best]
    assert np.median(history["accuracy"][last_ten]) > np.median(
        history["val_accuracy"][last_ten]
    )


def test_the_cnn_reaches_the_tutorials_accuracy(
    digits_model_file: dict[str, object],
) -> None:
    # eight epochs of the CNN, trained once for the session in conftest
    assert float(str(digits_model_file["accuracy"])) >= 0.95


def test_evaluation_reports_metrics_and_draws_the_tutorials_figures(
    digits: Dataset, digits_model_file: dict[str, object], tmp_path: Path
) -> None:
    model = keras.saving.load_model(digits_model_file["path"], compile=False)
    images, labels = digits.images[:300], digits.labels[:300]

    evaluation = evaluate(
        model, images, labels, class_names=digits.class_names, output_dir=tmp_path
    )

    assert 0.9 <= evaluation.accuracy <= 1.0
    assert evaluation.loss > 0
    assert evaluation.confusion.shape == (10, 10)
    assert evaluation.confusion.sum() == 300
    assert evaluation.confusion.trace() == round(evaluation.accuracy * 300)
    assert sum(row["support"] for row in evaluation.per_class.values()) == 300
    assert set(evaluation.figures) == {
        "samples",
        "predictions",
        "wrong",
        "confusion_matrix",
    }
    for path in evaluation.figures.values():
        assert_is_png(path)
    assert evaluation.metrics()["test_accuracy"] == evaluation.accuracy
