"""TF1 checkpoint test utilities: write checkpoints the way the authors' TF1 code does (tf.compat.v1
variables named by op name, saved with tf.compat.v1.train.Saver), make random weights with the reference
names and shapes, and compute the reference backbone forward pass with raw `tf.nn` ops.

Heads: `random_head_weights` / `tf1_head_names` (docs/tf1_checkpoints.md#head-variables). Backbones:
`tf1_variable_shapes` / `random_values` / `reference_forward` (#resnet-backbone, #deeplab-backbone), for any
(blocks, width, classes): a tiny ResNet follows
the same naming scheme as ResNet-101 at a fraction of the cost. Training-checkpoint extras: `adam_entries`
(RMI/LSTM training) and `momentum_entries` (TF-resnet / TF-deeplab training), both #ignored-entries.
Nothing here calls the package.
"""

import os

import numpy as np
import tensorflow as tf

HEAD_SCOPE = "text_objseg"
CELL = "multi_rnn_cell/cell_0/basic_lstm_cell"
# DeepLab's ASPP classifier (fc1_voc12) has PASCAL VOC's 21 classes in every reference checkpoint.
VOC_CLASSES = 21


def write_tf1_checkpoint(prefix: str | os.PathLike, arrays: dict[str, np.ndarray]) -> str:
    """Saves `arrays` (full TF1 variable names -> values, any dtype) as a TF1 V2 checkpoint at `prefix`.

    Returns the prefix as `Saver.save` returns it (pass it to `tf.train.load_checkpoint`)."""
    graph = tf.Graph()
    with graph.as_default():
        variables = [
            tf.compat.v1.get_variable(name, initializer=tf.constant(value), use_resource=False)
            for name, value in arrays.items()
        ]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, os.fspath(prefix), write_meta_graph=False)


# ----------------------------------------------------------------------------------------------------------
# Heads (docs/tf1_checkpoints.md#head-variables)


def random_head_weights(rng, model_name, variant, sizes) -> dict[str, np.ndarray]:
    """Random `text_objseg/` weights of an RMI or LSTM head, keyed relative to `text_objseg/`.

    `sizes` has vocabulary_size, embedding_dim, language_units, mlstm_units, hidden_units, visual_dim,
    backbone_channels. LSTM biases are random too (not zero) so the gate order is exercised.
    """

    def uniform(*shape, scale=0.3):
        return rng.uniform(-scale, scale, size=shape).astype(np.float32)

    E, L, D = sizes["embedding_dim"], sizes["language_units"], sizes["visual_dim"]
    weights = {"embedding": uniform(sizes["vocabulary_size"], E, scale=1.0)}
    if variant == "deeplab":
        weights["conv0/DW"] = uniform(1, 1, sizes["backbone_channels"], D, scale=0.1)
        weights["conv0/biases"] = uniform(D)
    if model_name == "rmi":
        U = sizes["mlstm_units"]
        weights["RNN/WLSTM/kernel"], weights["RNN/WLSTM/bias"] = uniform(E + L, 4 * L), uniform(4 * L)
        weights["RNN/ALSTM/kernel"], weights["RNN/ALSTM/bias"] = uniform(D + E + L + 8 + U, 4 * U), uniform(4 * U)
        weights["conv2/DW"], weights["conv2/biases"] = uniform(1, 1, U, 1, scale=1.0), uniform(1)
    else:
        H = sizes["hidden_units"]
        weights["RNN/kernel"], weights["RNN/bias"] = uniform(E + L, 4 * L), uniform(4 * L)
        weights["conv1/DW"], weights["conv1/biases"] = uniform(1, 1, D + L + 8, H), uniform(H)
        weights["conv2/DW"], weights["conv2/biases"] = uniform(1, 1, H, 1, scale=1.0), uniform(1)
    return weights


def tf1_head_names(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Maps the short keys of `random_head_weights` to the reference code's full variable names."""
    full = {}
    for key, value in weights.items():
        if key.startswith("RNN/"):
            scope, kind = key.rsplit("/", 1)
            full[f"{HEAD_SCOPE}/{scope}/{CELL}/{kind}"] = value
        else:
            full[f"{HEAD_SCOPE}/{key}"] = value
    return full


# ----------------------------------------------------------------------------------------------------------
# Training-checkpoint extras (not model weights; an importer must skip them)


def adam_entries(optimised: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What main.py's Adam adds to an RMI/LSTM training checkpoint (docs/tf1_checkpoints.md#ignored-entries).

    `optimised`: full names -> values of the optimised variables (every `text_objseg/...` variable, plus
    `ResNet/fc1000/{DW,biases}` for the resnet variant). Each gets `text_objseg/<name>/Adam` and `/Adam_1`
    (the scope prefix doubled), of its shape; plus the scalars `beta1_power`, `beta2_power` and the step
    counter `Variable`, all under `text_objseg/`.
    """
    entries = {}
    for name, value in optimised.items():
        entries[f"{HEAD_SCOPE}/{name}/Adam"] = np.full_like(value, 0.01)
        entries[f"{HEAD_SCOPE}/{name}/Adam_1"] = np.full_like(value, 1e-4)
    entries[f"{HEAD_SCOPE}/beta1_power"] = np.float32(0.9**1000)
    entries[f"{HEAD_SCOPE}/beta2_power"] = np.float32(0.999**1000)
    entries[f"{HEAD_SCOPE}/Variable"] = np.float32(1000.0)
    return entries


def momentum_entries(values: dict[str, np.ndarray], scope: str) -> dict[str, np.ndarray]:
    """What TF-resnet / TF-deeplab training adds (docs/tf1_checkpoints.md#ignored-entries): a Momentum slot per
    variable, named `<scope>/<name>/Momentum` (the scope prefix doubled), and an int64 `<scope>/global_step`."""
    entries = {f"{scope}/{name}/Momentum": np.zeros_like(value) for name, value in values.items()}
    entries[f"{scope}/global_step"] = np.int64(650000)
    return entries


# ----------------------------------------------------------------------------------------------------------
# Backbones (docs/tf1_checkpoints.md#resnet-backbone, #deeplab-backbone)


def tf1_variable_shapes(scope, blocks, width, classes) -> dict[str, tuple[int, ...]]:
    """Every backbone variable the reference code creates under `scope`, with its shape (§1.1, §2.1).

    Args:
        scope: "ResNet" (TF-resnet, with `fc1000`) or "DeepLab" (TF-deeplab, BN `factor`s and the unused
            ASPP classifier `fc1_voc12`).
        blocks: units in groups 2..5, (3, 4, 23, 3) for ResNet-101.
        width: bottleneck width of group 2 (64 for ResNet-101); doubles every group.
        classes: fc1000's output channels (ResNet only; 1000 for the real checkpoints).
    """
    if scope not in ("ResNet", "DeepLab"):
        raise ValueError(f"scope must be 'ResNet' or 'DeepLab', got {scope!r}")
    shapes = {}

    def batch_norm(prefix, channels):
        for name in ("beta", "gamma", "mean", "variance"):
            shapes[f"{prefix}/{name}"] = (channels,)
        if scope == "DeepLab":
            shapes[f"{prefix}/factor"] = (1,)

    shapes[f"{scope}/group_1/conv1/DW"] = (7, 7, 3, width)
    batch_norm(f"{scope}/group_1/bn_conv1", width)
    in_channels = width
    for group, units in zip((2, 3, 4, 5), blocks):
        channels = width * 2 ** (group - 2)
        for unit in range(units):
            prefix = f"{scope}/group_{group}_{unit}"
            kernels = {
                "block_1": (1, 1, in_channels, channels),
                "block_2": (3, 3, channels, channels),
                "block_3": (1, 1, channels, 4 * channels),
            }
            if unit == 0:
                kernels["block_add"] = (1, 1, in_channels, 4 * channels)
            for block, kernel_shape in kernels.items():
                shapes[f"{prefix}/{block}/conv/DW"] = kernel_shape
                batch_norm(f"{prefix}/{block}/bn", kernel_shape[-1])
            in_channels = 4 * channels
    if scope == "ResNet":
        shapes["ResNet/fc1000/DW"] = (1, 1, in_channels, classes)
        shapes["ResNet/fc1000/biases"] = (classes,)
    else:  # the ASPP classifier RMI never uses
        for branch in range(4):
            shapes[f"DeepLab/fc1_voc12/conv{branch}/DW"] = (3, 3, in_channels, VOC_CLASSES)
            shapes[f"DeepLab/fc1_voc12/conv{branch}/biases"] = (VOC_CLASSES,)
    return shapes


def random_values(shapes, seed) -> dict[str, np.ndarray]:
    """float32 values for `shapes` (name -> shape) that keep activations in a sane range: He-normal
    kernels, positive BN variances and factors, small betas, means and biases."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in shapes.items():
        leaf = name.rsplit("/", 1)[1]
        if leaf == "DW":
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        elif leaf == "gamma":
            value = rng.uniform(0.2, 0.6, shape)
        elif leaf == "variance":
            value = rng.uniform(0.5, 2.0, shape)
        elif leaf == "factor":
            value = rng.uniform(0.5, 2.0, shape)
        else:  # beta, mean, biases
            value = rng.uniform(-0.3, 0.3, shape)
        values[name] = value.astype(np.float32)
    return values


def reference_forward(reader, scope, images, atrous, blocks):
    """The reference backbone (docs/tf1_checkpoints.md#backbone-forward-pass) in raw tf.nn ops on checkpoint values.

    Args:
        reader: anything with `get_tensor(name)`, e.g. `tf.train.load_checkpoint(prefix)`.
        scope: "ResNet" or "DeepLab".
        images: (B, H, W, 3) float32, already preprocessed.
        atrous: True for output stride 8 (groups 4, 5 dilated 2, 4; always True for DeepLab), False for 32.
        blocks: units in groups 2..5, as the checkpoint was written.

    Returns:
        (res5c, logits) as numpy arrays; logits (fc1000's 1x1 conv) is None for DeepLab.
    """

    def value(name):
        return tf.constant(reader.get_tensor(f"{scope}/{name}"))

    def conv(x, prefix, stride=1, rate=1):
        kernel = value(f"{prefix}/DW")
        if rate > 1:  # every conv of a dilated unit, 1x1 included, goes through atrous_conv2d
            return tf.nn.atrous_conv2d(x, kernel, rate, padding="SAME")
        return tf.nn.conv2d(x, kernel, strides=stride, padding="SAME")

    def batch_norm(x, prefix):
        mean, variance = value(f"{prefix}/mean"), value(f"{prefix}/variance")
        if scope == "DeepLab":
            inverse = 1.0 / value(f"{prefix}/factor")
            mean, variance = inverse * mean, inverse * variance
        return tf.nn.batch_normalization(
            x, mean, variance, value(f"{prefix}/beta"), value(f"{prefix}/gamma"), variance_epsilon=1e-3
        )

    x = tf.constant(images)
    x = tf.nn.relu(batch_norm(conv(x, "group_1/conv1", stride=2), "group_1/bn_conv1"))
    x = tf.nn.max_pool2d(x, ksize=3, strides=2, padding="SAME")
    for group, units in zip((2, 3, 4, 5), blocks):
        strided = group == 3 or (not atrous and group > 3)
        rate = {4: 2, 5: 4}[group] if atrous and group > 3 else 1
        for unit in range(units):
            prefix = f"group_{group}_{unit}"
            stride = 2 if strided and unit == 0 else 1
            residual = tf.nn.relu(batch_norm(conv(x, f"{prefix}/block_1/conv", stride, rate), f"{prefix}/block_1/bn"))
            residual = tf.nn.relu(batch_norm(conv(residual, f"{prefix}/block_2/conv", 1, rate), f"{prefix}/block_2/bn"))
            residual = batch_norm(conv(residual, f"{prefix}/block_3/conv", 1, rate), f"{prefix}/block_3/bn")
            if unit == 0:
                shortcut = batch_norm(conv(x, f"{prefix}/block_add/conv", stride, rate), f"{prefix}/block_add/bn")
            else:
                shortcut = x
            x = tf.nn.relu(residual + shortcut)
    res5c = x
    if scope == "ResNet":
        logits = tf.nn.conv2d(res5c, value("fc1000/DW"), strides=1, padding="SAME") + value("fc1000/biases")
        return res5c.numpy(), logits.numpy()
    return res5c.numpy(), None


def small_config(model_name, variant, **model_overrides):
    """A referring config at tiny sizes (shrink_referring_config) with the reference resize convention."""
    from tf_recurrent_seg.defaults import referring_config, shrink_referring_config

    config = shrink_referring_config(referring_config(model_name, variant))
    config.model.resize_convention = "reference"
    config.model.update(model_overrides)
    return config


def sizes_of(model_config):
    """The sizes `random_head_weights` needs, read from a config's `model` section."""
    backbone = model_config.backbone
    # fc1000's width (resnet) or res5c's channels, 4 * (8 * base_width) (deeplab)
    channels = backbone.classifier_units if backbone.variant == "resnet" else 32 * backbone.base_width
    keys = ("vocabulary_size", "embedding_dim", "language_units", "mlstm_units", "hidden_units", "visual_dim")
    return {**{key: model_config[key] for key in keys}, "backbone_channels": channels}
