"""Random weights for backbone tests: BN far from the identity, He-normal kernels, non-zero biases."""

import keras
import numpy as np


def randomize_weights(model, seed):
    """Random conv weights and biases and random BN statistics, so that BN is far from the identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.2, 0.6, channels).astype("float32"),  # gamma
                    rng.uniform(-0.2, 0.2, channels).astype("float32"),  # beta
                    rng.uniform(-0.5, 0.5, channels).astype("float32"),  # moving mean
                    rng.uniform(0.5, 2.0, channels).astype("float32"),  # moving variance
                ]
            )
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel, bias = layer.get_weights()
            fan_in = np.prod(kernel.shape[:-1])
            layer.set_weights(
                [
                    rng.normal(0.0, np.sqrt(2.0 / fan_in), kernel.shape).astype("float32"),
                    rng.normal(0.0, 0.1, bias.shape).astype("float32"),
                ]
            )


def images(shape, seed=0):
    return np.random.default_rng(seed).normal(0.0, 50.0, shape).astype("float32")
