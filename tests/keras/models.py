"""Small Keras models built in code (random init): a CNN and a subclassed model with two inputs."""

from __future__ import annotations

import keras
import numpy as np


def cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 3), name="image"),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5),
        ],
        name="cnn",
    )


@keras.saving.register_keras_serializable(package="jms_tests")
class TwoInputs(keras.Model):
    """``call((image, meta))`` -> ``{"logits": ..., "embedding": ...}``."""

    def __init__(self, units: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.image_dense = keras.layers.Dense(units, activation="tanh")
        self.meta_dense = keras.layers.Dense(units)
        self.head = keras.layers.Dense(3)

    def call(self, inputs):
        image, meta = inputs
        embedding = self.image_dense(image) + self.meta_dense(meta)
        return {"logits": self.head(embedding), "embedding": embedding}

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


def two_inputs() -> tuple[TwoInputs, list[np.ndarray]]:
    keras.utils.set_random_seed(1)
    model = TwoInputs()
    example = [array(3, 6), array(3, 5, seed=2)]
    model(example)  # build
    return model, example


def array(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")
