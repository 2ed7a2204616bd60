"""Imports the backbone weights of the authors' TF1 checkpoints (TF-resnet, TF-deeplab) into Keras.

The reference RMI / LSTM checkpoints hold the whole ResNet-101 under `ResNet/` (TF-resnet, 522 variables,
with the ImageNet classifier `ResNet/fc1000/*`) or `DeepLab/` (TF-deeplab, with a fifth BN variable
`factor` per BN scope and an unused `fc1_voc12` classifier). docs/tf1_checkpoints.md gives the names
(#resnet-backbone, #deeplab-backbone) and the forward computation (#backbone-forward-pass);
`ResNetBackbone` computes the same thing when built with TF 'SAME' padding and BN epsilon 1e-3, so the
import is a renaming:

    <scope>/group_1/conv1/DW                          -> conv1_conv kernel (bias set to zero)
    <scope>/group_1/bn_conv1/{gamma,beta,mean,variance} -> conv1_bn
    <scope>/group_<G>_<U>/block_<B>/conv/DW            -> conv<G>_block<U+1>_<b>_conv kernel (bias zero)
    <scope>/group_<G>_<U>/block_<B>/bn/...             -> conv<G>_block<U+1>_<b>_bn
        with block_1 -> 1, block_2 -> 2, block_3 -> 3, block_add (projection shortcut) -> 0
    ResNet/fc1000/{DW,biases}                           -> fc1000 kernel, bias

The head importer (`convert_tf1.py`) calls `load_tf1_backbone_weights` and reports the checkpoint names it
did not consume (head variables, optimiser slots, `DeepLab/fc1_voc12/*`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Protocol

import keras
import numpy as np

TF1_BACKBONE_SCOPES = ("ResNet", "DeepLab")
# The reference backbones' BN epsilon (docs/tf1_checkpoints.md#backbone-forward-pass).
TF1_BN_EPSILON = 1e-3

_BLOCK_NAMES = {"0": "block_add", "1": "block_1", "2": "block_2", "3": "block_3"}
_UNIT_LAYER = re.compile(r"^conv([2-5])_block(\d+)_([0-3])_(conv|bn)$")


class CheckpointReaderLike(Protocol):
    """What the importer needs from a checkpoint: `tf.train.load_checkpoint(path)` returns one."""

    def get_variable_to_shape_map(self) -> dict[str, list[int]]: ...

    def get_tensor(self, name: str) -> np.ndarray: ...


def _tf1_prefix(layer_name: str, scope: str) -> str | None:
    """Checkpoint scope of a backbone layer (`<scope>/group_2_0/block_add/conv`), None if it has none."""
    if layer_name == "conv1_conv":
        return f"{scope}/group_1/conv1"
    if layer_name == "conv1_bn":
        return f"{scope}/group_1/bn_conv1"
    if layer_name == "fc1000":
        return f"{scope}/fc1000"
    match = _UNIT_LAYER.match(layer_name)
    if match is None:
        return None
    group, unit, block, kind = match.groups()
    return f"{scope}/group_{group}_{int(unit) - 1}/{_BLOCK_NAMES[block]}/{kind}"


def _check_backbone_is_reference_compatible(backbone: keras.Model) -> None:
    """The TF1 weights reproduce the reference only with TF 'SAME' stem padding and BN epsilon 1e-3."""
    layers = {layer.name: layer for layer in backbone.layers}
    if "conv1_conv" not in layers:
        raise ValueError(f"model {backbone.name!r} is not a ResNetBackbone: it has no layer 'conv1_conv'")
    if "conv1_pad" in layers or "pool1_pad" in layers or layers["conv1_conv"].padding != "same":
        raise ValueError(
            "TF1 backbone weights need a backbone built with padding 'same' (TF 'SAME', as the reference "
            "code pads); this backbone pads explicitly"
        )
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and not np.isclose(
            layer.epsilon, TF1_BN_EPSILON, rtol=1e-9, atol=0.0
        ):
            raise ValueError(
                f"TF1 backbone weights need bn_epsilon {TF1_BN_EPSILON} (the reference code's); layer "
                f"{layer.name!r} has epsilon {layer.epsilon}"
            )


def _read_variable(
    reader: CheckpointReaderLike,
    shapes: dict[str, list[int]],
    consumed: set[str],
    name: str,
    expected_shape: tuple[int, ...],
) -> np.ndarray:
    """Checkpoint variable `name` as float32, added to `consumed`; ValueError if missing or of another shape."""
    if name not in shapes:
        raise ValueError(f"checkpoint variable {name!r} (expected shape {list(expected_shape)}) is missing")
    if tuple(shapes[name]) != tuple(expected_shape):
        raise ValueError(
            f"checkpoint variable {name!r} has shape {list(shapes[name])}, expected {list(expected_shape)}"
        )
    consumed.add(name)
    return np.asarray(reader.get_tensor(name), dtype=np.float32)


def _tf1_layer_values(
    layer: keras.layers.Layer, prefix: str, scope: str, read: Callable[[str, tuple[int, ...]], np.ndarray]
) -> list[np.ndarray]:
    """The Keras weights of one backbone layer from its checkpoint scope `prefix`, read with `read(name, shape)`."""
    if isinstance(layer, keras.layers.BatchNormalization):
        channels = (layer.gamma.shape[0],)
        # Keras order: gamma, beta, moving mean, moving variance.
        gamma, beta, mean, variance = (read(f"{prefix}/{v}", channels) for v in ("gamma", "beta", "mean", "variance"))
        if scope == "DeepLab":
            # Reciprocal first, then the product, both rounded to float32 (as the TF1 graph does).
            inverse = np.float32(1.0) / read(f"{prefix}/factor", (1,))
            mean, variance = inverse * mean, inverse * variance
        return [gamma, beta, mean, variance]
    if isinstance(layer, keras.layers.Conv2D):
        kernel = read(f"{prefix}/DW", tuple(layer.kernel.shape))
        if layer.name == "fc1000":
            bias = read(f"{prefix}/biases", tuple(layer.bias.shape))
        else:
            bias = np.zeros(layer.bias.shape, np.float32)  # the reference convs have no bias
        return [kernel, bias]
    raise ValueError(f"backbone layer {layer.name!r} ({type(layer).__name__}) has no TF1 counterpart")


def load_tf1_backbone_weights(backbone: keras.Model, reader: CheckpointReaderLike, scope: str) -> set[str]:
    """Sets a `ResNetBackbone`'s weights from a TF1 TF-resnet / TF-deeplab checkpoint.

    Conv kernels are stored HWIO, as Keras stores them; the reference convs have no bias, so the Keras
    conv biases are set to zero. In a DeepLab checkpoint each BN scope's `factor` (Caffe's scale factor)
    divides the stored statistics: mean' = float32(1 / factor) * mean, likewise the variance, computed in
    float32 in exactly that order, which reproduces the TF1 graph bit for bit
    (docs/tf1_checkpoints.md#backbone-forward-pass).
    Nothing is assigned unless every variable is found with the right shape.

    Args:
        backbone: a `ResNetBackbone` with `padding="same"` and `bn_epsilon=1e-3`. Any
            `blocks_per_stage` / `base_width` works if the checkpoint follows the same scheme. The
            "resnet" variant needs `<scope>/fc1000/{DW,biases}` (only TF-resnet checkpoints have them);
            the "deeplab" variant has no fc1000.
        reader: e.g. `tf.train.load_checkpoint(prefix)`; anything with `get_variable_to_shape_map()` and
            `get_tensor(name)`.
        scope: "ResNet" (TF-resnet) or "DeepLab" (TF-deeplab, BN scopes with `factor`).

    Returns:
        The checkpoint names consumed. Everything else (head variables, optimiser slots such as
        `.../Momentum` or `.../Adam`, `global_step`, `DeepLab/fc1_voc12/*`, which RMI never uses) is left
        to the caller to report or ignore.

    Raises:
        ValueError: `scope` unknown; the backbone was built with explicit padding or another BN epsilon;
            a checkpoint variable is missing or has another shape (naming the variable and the expected
            shape); the backbone has a weighted layer with no TF1 counterpart.

    Example:
    >>> reader = tf.train.load_checkpoint("model/RMI_resnet_iter_650000.tfmodel")  # doctest: +SKIP
    >>> backbone = ResNetBackbone()  # doctest: +SKIP
    >>> consumed = load_tf1_backbone_weights(backbone, reader, "ResNet")  # doctest: +SKIP
    >>> len(consumed)  # doctest: +SKIP
    522
    """
    if scope not in TF1_BACKBONE_SCOPES:
        raise ValueError(f"scope must be one of {TF1_BACKBONE_SCOPES}, got {scope!r}")
    _check_backbone_is_reference_compatible(backbone)
    consumed: set[str] = set()
    read = functools.partial(_read_variable, reader, reader.get_variable_to_shape_map(), consumed)
    assignments = []
    for layer in backbone.layers:
        if not layer.weights:
            continue
        prefix = _tf1_prefix(layer.name, scope)
        if prefix is None:
            raise ValueError(f"backbone layer {layer.name!r} has no counterpart in a TF1 {scope} checkpoint")
        assignments.append((layer, _tf1_layer_values(layer, prefix, scope, read)))

    for layer, values in assignments:
        layer.set_weights(values)
    return consumed
