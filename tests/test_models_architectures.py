"""The named architectures: the tutorial's MLP and its CNN with Dropout."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from imgq.errors import ModelError
from imgq.models.architectures import ARCHITECTURES, build

SHAPES = [(28, 28, 1), (128, 128, 3)]


def layer_types(model: keras.Model) -> set[type]:
    return {type(layer) for layer in model.layers}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("input_shape", SHAPES, ids=["28x28x1", "128x128x3"])
def test_architecture_builds_for_grey_digits_and_colour_photos(
    name: str, input_shape: tuple[int, int, int]
) -> None:
    model = build(name, input_shape=input_shape, class_count=3)

    batch = np.random.default_rng(0).random((2, *input_shape), dtype=np.float32)
    probabilities = model.predict(batch, verbose=0)

    assert model.input_shape == (None, *input_shape)
    assert model.output_shape == (None, 3)
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("class_count", [2, 10, 37])
def test_output_has_one_unit_per_class(class_count: int) -> None:
    for name in ARCHITECTURES:
        model = build(name, input_shape=(28, 28, 1), class_count=class_count)

        assert model.output_shape == (None, class_count)


@pytest.mark.parametrize("input_shape", SHAPES, ids=["28x28x1", "128x128x3"])
def test_cnn_has_dropout_and_the_mlp_has_none(
    input_shape: tuple[int, int, int],
) -> None:
    cnn = build("cnn", input_shape=input_shape, class_count=10)
    mlp = build("mlp", input_shape=input_shape, class_count=10)

    assert layers.Dropout in layer_types(cnn)
    assert layers.Conv2D in layer_types(cnn)
    assert layers.Dropout not in layer_types(mlp)
    assert layers.Conv2D not in layer_types(mlp)


def test_cnn_for_large_photos_shrinks_them_before_the_dense_head() -> None:
    small = build("cnn", input_shape=(28, 28, 1), class_count=2)
    large = build("cnn", input_shape=(128, 128, 3), class_count=2)

    def flattened_size(model: keras.Model) -> int:
        flatten = next(
            layer for layer in model.layers if isinstance(layer, layers.Flatten)
        )
        return int(flatten.output.shape[-1])

    # large inputs must not blow up the first dense layer
    assert flattened_size(large) <= 4 * flattened_size(small)


def test_built_model_is_compiled_for_categorical_training() -> None:
    model = build("mlp", input_shape=(8, 8, 1), class_count=2)

    assert model.optimizer is not None
    assert model.loss == "categorical_crossentropy"


def test_unknown_architecture_raises_model_error_listing_the_known_ones() -> None:
    with pytest.raises(ModelError, match="cnn, mlp"):
        build("resnet9000", input_shape=(28, 28, 1), class_count=10)


@pytest.mark.parametrize("class_count", [1, 0, -3])
def test_fewer_than_two_classes_raises_model_error(class_count: int) -> None:
    with pytest.raises(ModelError, match="two classes"):
        build("cnn", input_shape=(28, 28, 1), class_count=class_count)
