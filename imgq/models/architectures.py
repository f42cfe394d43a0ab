"""The named network architectures, after the tutorial imgq grew from.

``mlp`` is the tutorial's fully connected network with no regularisation: it
overfits, on purpose, to show why the CNN exists. ``cnn`` is its convolution
and pooling network with Dropout. Both take any (height, width, channels)
and class count, so the same code serves 28x28 digits and 128x128 colour
photographs.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from imgq.errors import ModelError

# Inputs larger than this get extra convolution blocks before the tutorial's
# classifier head, so the flattened features stay small.
CNN_HEAD_SIZE = 28


def build_mlp(input_shape: tuple[int, int, int], class_count: int) -> keras.Model:
    """Four hidden layers of 256 units, no dropout: the overfitting baseline."""
    inputs = keras.Input(shape=input_shape)
    features = layers.Flatten()(inputs)
    for _ in range(4):
        features = layers.Dense(256, activation="relu")(features)
    outputs = layers.Dense(class_count, activation="softmax")(features)
    return keras.Model(inputs, outputs, name="mlp")


def build_cnn(input_shape: tuple[int, int, int], class_count: int) -> keras.Model:
    """Two convolutions, pooling and Dropout, then a dense head with Dropout."""
    inputs = keras.Input(shape=input_shape)
    features = inputs
    size = min(input_shape[0], input_shape[1])
    filters = 32
    while size > CNN_HEAD_SIZE * 1.5:
        # shrink large photographs to the tutorial's scale before its layers
        features = layers.Conv2D(filters, 3, padding="same", activation="relu")(
            features
        )
        features = layers.MaxPooling2D(2)(features)
        filters = min(filters * 2, 128)
        size //= 2
    features = layers.Conv2D(32, 3, activation="relu")(features)
    features = layers.Conv2D(64, 3, activation="relu")(features)
    features = layers.MaxPooling2D(2)(features)
    features = layers.Dropout(0.25)(features)
    features = layers.Flatten()(features)
    features = layers.Dense(128, activation="relu")(features)
    features = layers.Dropout(0.5)(features)
    outputs = layers.Dense(class_count, activation="softmax")(features)
    return keras.Model(inputs, outputs, name="cnn")


ARCHITECTURES: dict[str, Callable[[tuple[int, int, int], int], keras.Model]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
}


def build(
    name: str, *, input_shape: tuple[int, int, int], class_count: int
) -> keras.Model:
    """Build and compile the architecture called ``name``."""
    try:
        builder = ARCHITECTURES[name]
    except KeyError as error:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ModelError(f"unknown architecture {name!r}; known: {known}") from error
    if class_count < 2:
        raise ModelError(f"a classifier needs two classes or more, not {class_count}")
    model = builder(input_shape, class_count)
    model.compile(
        optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"]
    )
    return model
