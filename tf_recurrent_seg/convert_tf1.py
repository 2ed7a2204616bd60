"""Import checkpoints written by the authors' TF1 code (TF-phrasecut-public RMI_model / LSTM_model).

    model = convert_checkpoint(prefix, cli.convert_tf1.import_model("rmi", "resnet", vocabulary_size))

The command line (`tf-recurrent-seg-convert-tf1`): `tf_recurrent_seg.cli.convert_tf1`.

Variable names, shapes and conventions: docs/tf1_checkpoints.md (#head-variables onwards). The model to import
into is built with the reference's resize convention and backbone padding / BN epsilon (`cli.convert_tf1`'s
`import_config`), so it gives the TF1 graph's outputs. Optimiser slots, step counters and DeepLab's unused
classifier are ignored; a missing or mis-shaped variable is a ValueError that names it.
"""

import re
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tf_recurrent_seg.models.referring import ReferringSegmenter, RMIHead
from tf_recurrent_seg.tf1_backbone import load_tf1_backbone_weights

HEAD_SCOPE = "text_objseg"
BACKBONE_SCOPES = {"resnet": "ResNet", "deeplab": "DeepLab"}
# Checkpoint entries that are not model weights (docs/tf1_checkpoints.md#ignored-entries).
IGNORED_PATTERN = re.compile(
    r"(/Adam(_1)?$|/Momentum$|(^|/)(beta1_power|beta2_power|Variable|global_step)$|/biased$|/local_step$|^DeepLab/fc1_voc12/)"
)
# TF 1.0-1.1 spellings of the LSTM cell variables, accepted defensively (docs/tf1_checkpoints.md#lstm-cell-layout).
LEGACY_ALIASES = {"/kernel": "/weights", "/bias": "/biases"}

ValueReader = Callable[[str, tuple], np.ndarray]


def checkpoint_value_reader(reader, used: set[str]) -> ValueReader:
    """Returns `read(name, shape)`, which fetches a checkpoint tensor, checks its shape and records its name."""
    shapes = reader.get_variable_to_shape_map()

    def read(name: str, shape: tuple) -> np.ndarray:
        found = name
        if found not in shapes:
            for suffix, legacy in LEGACY_ALIASES.items():
                if name.endswith(suffix) and name[: -len(suffix)] + legacy in shapes:
                    found = name[: -len(suffix)] + legacy
        if found not in shapes:
            raise ValueError(f"checkpoint variable '{name}' with shape {list(shape)} is missing")
        if tuple(shapes[found]) != tuple(shape):
            raise ValueError(f"checkpoint variable '{name}' has shape {list(shapes[found])}, expected {list(shape)}")
        used.add(found)
        return reader.get_tensor(found)

    return read


def keras_lstm_weights(kernel: np.ndarray, bias: np.ndarray, input_dim: int, forget_bias: float) -> list[np.ndarray]:
    """Converts a TF1 BasicLSTMCell (kernel rows [x; h], gate columns i, j, f, o, constant forget bias)
    to Keras LSTM weights [kernel, recurrent_kernel, bias] (gate columns i, f, c, o, bias holding +1)."""
    units = bias.shape[0] // 4
    blocks = [slice(k * units, (k + 1) * units) for k in range(4)]  # i, j, f, o
    keras_order = [blocks[0], blocks[2], blocks[1], blocks[3]]  # i, f, c (= j), o

    def reorder(matrix):
        return np.concatenate([matrix[..., block] for block in keras_order], axis=-1)

    keras_bias = reorder(bias).copy()
    keras_bias[units : 2 * units] += forget_bias
    return [reorder(kernel[:input_dim]), reorder(kernel[input_dim:]), keras_bias]


def _conv_weights(read: ValueReader, layer: keras.layers.Conv2D, scope: str) -> None:
    kernel_shape = tuple(layer.kernel.shape)
    layer.set_weights([read(f"{scope}/DW", kernel_shape), read(f"{scope}/biases", kernel_shape[-1:])])


def _lstm_cell_scope(prefix: str) -> str:
    return f"{prefix}/multi_rnn_cell/cell_0/basic_lstm_cell"


def load_tf1_head_weights(head: keras.Model, read: ValueReader) -> None:
    """Assigns the `text_objseg/...` variables of an RMI or LSTM-baseline checkpoint to an `RMIHead` or
    `LSTMBaselineHead`."""
    vocabulary_size, embedding_dim = head.vocabulary_size, head.embedding_dim
    language_units = head.language_units
    is_rmi = isinstance(head, RMIHead)
    head.get_layer("embedding").set_weights([read(f"{HEAD_SCOPE}/embedding", (vocabulary_size, embedding_dim))])
    if head.visual_projection:  # the DeepLab variant
        _conv_weights(read, head.get_layer("conv0"), f"{HEAD_SCOPE}/conv0")
    _conv_weights(read, head.get_layer("conv2"), f"{HEAD_SCOPE}/conv2")

    language_scope = _lstm_cell_scope(f"{HEAD_SCOPE}/RNN/WLSTM" if is_rmi else f"{HEAD_SCOPE}/RNN")
    language_kernel = read(f"{language_scope}/kernel", (embedding_dim + language_units, 4 * language_units))
    language_bias = read(f"{language_scope}/bias", (4 * language_units,))
    head.get_layer("language_lstm").set_weights(
        keras_lstm_weights(language_kernel, language_bias, embedding_dim, head.forget_bias)
    )

    if not is_rmi:
        _conv_weights(read, head.get_layer("conv1"), f"{HEAD_SCOPE}/conv1")
        return
    # ALSTM kernel rows: [visual (D), word (E), language (L), spatial (8), hidden (u)]
    # (docs/tf1_checkpoints.md#mlstm-kernel-rows).
    visual_dim, units = head.visual_dim, head.mlstm_units
    word_end = visual_dim + embedding_dim + language_units
    input_dim = word_end + 8
    mlstm_scope = _lstm_cell_scope(f"{HEAD_SCOPE}/RNN/ALSTM")
    kernel = read(f"{mlstm_scope}/kernel", (input_dim + units, 4 * units))
    bias = read(f"{mlstm_scope}/bias", (4 * units,))
    visual_kernel = np.concatenate([kernel[:visual_dim], kernel[word_end:input_dim]], axis=0)
    head.get_layer("mlstm").cell.set_weights([visual_kernel, kernel[visual_dim:word_end], kernel[input_dim:], bias])


def convert_checkpoint(checkpoint: str, model: ReferringSegmenter) -> ReferringSegmenter:
    """Loads a TF1 checkpoint into `model` and returns it.

    Args:
        checkpoint: checkpoint prefix (the path without `.index` / `.data-*`).
        model: an RMI or LSTM-baseline `ReferringSegmenter` of the checkpoint's sizes (its embedding as many rows
            as the checkpoint's vocabulary has lines), built with the reference conventions to give the TF1
            graph's outputs (`tf_recurrent_seg.cli.convert_tf1.import_model`). With a backbone (a
            `ResNetBackbone`, variant "resnet" or "deeplab") the checkpoint's backbone is loaded too; without one
            only the head, and the model takes cached `visual_features`.

    Returns:
        `model`, with `model.unused_checkpoint_variables` listing entries that were neither loaded nor known to be
        ignorable (a head-only model ignores the backbone's).
    """
    if not isinstance(model, ReferringSegmenter):
        raise ValueError(f"model must be a ReferringSegmenter (RMI or LSTM baseline), got {type(model).__name__}")
    scope = None
    if model.include_backbone:
        variant = getattr(model.backbone, "variant", None)
        if variant not in BACKBONE_SCOPES:
            raise ValueError(f"the model's backbone must be a ResNet of variant {sorted(BACKBONE_SCOPES)}")
        scope = BACKBONE_SCOPES[variant]
    reader = tf.train.load_checkpoint(checkpoint)
    used: set[str] = set()
    load_tf1_head_weights(model.head, checkpoint_value_reader(reader, used))
    if scope is not None:
        used |= load_tf1_backbone_weights(model.backbone, reader, scope)
    leftover = sorted(
        name for name in reader.get_variable_to_shape_map() if name not in used and not IGNORED_PATTERN.search(name)
    )
    if scope is None:
        leftover = [name for name in leftover if not name.startswith(tuple(f"{s}/" for s in BACKBONE_SCOPES.values()))]
    model.unused_checkpoint_variables = leftover
    return model
