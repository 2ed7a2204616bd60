"""Shared spatial gates vs nine separate LSTM gate computations in one LG-LSTM layer, and the whole model.

    python benchmarks/lg_lstm.py

Prints one JSON line. For one LG-LSTM layer at 41x41, d = 64, batch 1 (the Horse-Cow setting), in this
process: `naive_ms` computes the gates of the eight spatial LSTMs and the depth LSTM as nine separate
products (what nine independent LSTMs would do), `shared_gates_ms` is the package's layer (the eight
spatial LSTMs share W^s and read the same H, so their gates are computed once); targets speedup >= 4,
max_abs_diff <= 1e-5. Also the three neighbour gathers (docs/decisions.md#neighbour-gather): `gather_ms` forward
and `gather_train_ms` forward + backward on the (1, 41, 41, 8, 64) hidden maps, `demo_gather_train_ms` on the
synthetic demo's (8, 13, 13, 8, 16); `gather_train_speedup` is shift over the default depthwise convolution at
both sizes (target >= 1.5). `extract_patches_layer_ms` is the layer with `neighbour_gather="extract_patches"` (its
outputs differ from the default's by `gather_max_abs_diff`), `layer_slowdown` over the default layer; and
`backbone_ms` / `lg_lstm_ms` (whole model minus backbone) at 321x321, so the LSTMs' share of the time shows.
Each pair (naive and shared, the two gathers, the two layers, backbone and model) is timed in turn within every
repeat, so that a change in the load of a shared machine hits both alike.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from _common import interleaved_min_ms

from tf_recurrent_seg.defaults import parsing_config
from tf_recurrent_seg.layers.lg_lstm import GATHERS, LGLSTMLayer, assemble_input_state, input_state_channels
from tf_recurrent_seg.models import build_lg_lstm

REPEATS = 5  # the minimum over repeats: the least disturbed run on a shared machine
PAIR_REPEATS = 40  # for the neighbour-gather ratios, which are small and noisy on a loaded machine
SIZE, UNITS = 41, 64
DEMO_HIDDEN_SHAPE = (8, 13, 13, 8, 16)  # batch 8, 97 -> 13x13 features, d = 16 (configs/lg_lstm_synthetic.py)


def naive_layer(layer):
    """The same layer with nine separate gate products and nine separate memory updates."""

    def lstm(gates, memory):
        i, f, o, c = tf.split(gates, 4, axis=-1)
        memory = tf.sigmoid(f) * memory + tf.sigmoid(i) * tf.tanh(c)
        return tf.tanh(tf.sigmoid(o) * memory), memory  # the default "grid" hidden form

    @tf.function
    def run(state, spatial_memory, depth_memory):
        hidden, memories = [], []
        for direction in range(spatial_memory.shape[3]):
            gates = tf.matmul(state, layer.spatial_kernel) + layer.spatial_bias
            h, m = lstm(gates, spatial_memory[..., direction, :])
            hidden.append(h)
            memories.append(m)
        depth_hidden, depth_memory = lstm(tf.matmul(state, layer.depth_kernel) + layer.depth_bias, depth_memory)
        spatial_hidden = tf.stack(hidden, axis=3)
        next_state = assemble_input_state(spatial_hidden, depth_hidden, layer.neighbourhood, layer.use_global)
        return next_state, tf.stack(memories, axis=3), depth_memory

    return run


def gather_times_ms(spatial_hidden) -> tuple[dict, dict]:
    """Each gather's forward, and forward + backward (the gradient of the slots' sum of squares), in turn."""
    forward = [tf.function(lambda h, gather=gather: gather(h, 8)) for gather in GATHERS.values()]

    def with_gradient(gather):
        @tf.function
        def run(h):
            with tf.GradientTape() as tape:
                tape.watch(h)
                slots = gather(h, 8)
                loss = tf.reduce_sum(slots * slots)
            return tape.gradient(loss, h)

        return run

    hidden = tf.constant(spatial_hidden)
    forward_ms = interleaved_min_ms(forward, hidden, repeats=PAIR_REPEATS)
    train_ms = interleaved_min_ms([with_gradient(g) for g in GATHERS.values()], hidden, repeats=PAIR_REPEATS)
    return tuple({name: round(ms, 2) for name, ms in zip(GATHERS, times)} for times in (forward_ms, train_ms))


def main():
    rng = np.random.default_rng(0)
    layer = LGLSTMLayer(UNITS)
    channels = input_state_channels(UNITS, 8, True)
    state = rng.normal(size=(1, SIZE, SIZE, channels)).astype(np.float32)
    spatial_memory = rng.normal(size=(1, SIZE, SIZE, 8, UNITS)).astype(np.float32)
    depth_memory = rng.normal(size=(1, SIZE, SIZE, UNITS)).astype(np.float32)
    inputs = [state, spatial_memory, depth_memory]
    layer(inputs)
    shared = tf.function(lambda s, m, d: layer([s, m, d]))
    naive = naive_layer(layer)
    max_abs_diff = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(shared(*inputs), naive(*inputs))
    )
    naive_ms, shared_ms = interleaved_min_ms([naive, shared], *inputs, repeats=REPEATS)

    gather_ms, gather_train_ms = gather_times_ms(np.tanh(spatial_memory))
    _, demo_gather_train_ms = gather_times_ms(np.tanh(rng.normal(size=DEMO_HIDDEN_SHAPE)).astype(np.float32))
    patches_layer = LGLSTMLayer(UNITS, neighbour_gather="extract_patches")
    patches_layer(inputs)
    patches_layer.set_weights(layer.get_weights())
    with_patches = tf.function(lambda s, m, d: patches_layer([s, m, d]))
    gather_max_abs_diff = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(shared(*inputs), with_patches(*inputs))
    )
    default_layer_ms, patches_layer_ms = interleaved_min_ms([shared, with_patches], *inputs, repeats=PAIR_REPEATS)

    config = parsing_config("lg_lstm")
    model = build_lg_lstm(config)
    backbone = model.get_layer("backbone")
    image = rng.normal(size=(1, config.model.image_size, config.model.image_size, 3)).astype(np.float32)
    # In turn within each repeat: timed apart, a busy moment of a shared machine made the backbone slower than the
    # whole model (a negative LG-LSTM share).
    backbone_ms, model_ms = interleaved_min_ms(
        [tf.function(lambda x: backbone(x)), tf.function(lambda x: model(x))], image, repeats=REPEATS
    )
    print(
        json.dumps(
            {
                "benchmark": "lg_lstm",
                "naive_ms": round(naive_ms, 2),
                "shared_gates_ms": round(shared_ms, 2),
                "speedup": round(naive_ms / shared_ms, 2),
                "max_abs_diff": max_abs_diff,
                "gather_ms": gather_ms,
                "gather_train_ms": gather_train_ms,
                "demo_gather_train_ms": demo_gather_train_ms,
                "gather_train_speedup": round(
                    min(times["shift"] / times["depthwise_conv"] for times in (gather_train_ms, demo_gather_train_ms)),
                    2,
                ),
                "extract_patches_layer_ms": round(patches_layer_ms, 2),
                "layer_slowdown": round(patches_layer_ms / default_layer_ms, 2),
                "gather_max_abs_diff": gather_max_abs_diff,
                "model_ms": round(model_ms, 1),
                "backbone_ms": round(backbone_ms, 1),
                "lg_lstm_ms": round(model_ms - backbone_ms, 1),  # transition, 5 layers, predictions, upsampling
                "lg_lstm_share": round((model_ms - backbone_ms) / model_ms, 3),
                "feature_size": SIZE,
                "units": UNITS,
                "batch": 1,
            }
        )
    )


if __name__ == "__main__":
    main()
