"""Achieved GFLOP/s of the RMI and LG-LSTM forward passes, as a fraction of a large float32 matmul's.

    python benchmarks/roofline.py [--repeats 5] [--matmul_sizes 2048,4096]

Prints one JSON line. In one process:
- `matmul_gflops_per_s`: the best rate of a square float32 `tf.matmul` (2 * n**3 FLOPs) over the sizes in
  `--matmul_sizes`, measured before the models and again (largest size) after them, best of all kept: the
  rate this machine reaches on the friendliest dense kernel while the process runs.
- `rmi`: `build_rmi(referring_config("rmi", "resnet"))` forward, 320x320 image, batch 1, 20 real words.
- `lg_lstm`: `build_lg_lstm(parsing_config("lg_lstm"))` forward, 321x321 image, batch 1 (random weights:
  building reads no ImageNet weights, only training does).
For each model: `gflops` (work of one forward pass), `ms` (minimum over `--repeats` timed calls of a
`tf.function` after one warm-up call), `achieved_gflops_per_s`, `fraction_of_matmul` (LG-LSTM target >= 0.5),
and `parts`: the same numbers for the backbone and for the rest (head), so the share of each shows (RMI head
target: `rmi.parts.head.fraction_of_matmul` >= 0.65).

How FLOPs are counted. A multiply-add is 2 FLOPs. The count is TensorFlow's own: the model's forward is
traced as a concrete function with fully static input shapes, its variables are frozen into constants
(`convert_variables_to_constants_v2`), and `tf.compat.v1.profiler.profile(graph,
options=ProfileOptionBuilder.float_operation())` sums the op statistics TensorFlow registers: Conv2D
2 * output elements * kh * kw * C_in, MatMul / BatchMatMul 2 * output elements * K, elementwise ops
(Add, Mul, BiasAdd, Maximum, ...) 1 per output element; transcendental ops (Sigmoid, Tanh, Relu) and data
movement (Pad, Slice, Concat, SpaceToBatchND) count 0. The profiler reads only the top-level graph, so a
`tf.while_loop` body would be counted once: `count_flops` refuses graphs with loops, and the RMI
count is taken on the same model built with `fixed_steps=True` (the mLSTM and language LSTM unrolled over
20 steps; with 20 real words that is exactly the work the looped model does, since trimming removes no
step). Conds are lowered to Switch / Merge when the variables are frozen, so both branches sit in the
top-level graph and the profiler adds both although one runs: `count_flops` accepts a cond only when no op
inside a branch has a registered count (`cond_branch_ops`), so the total is the same whichever branch runs.
The unrolled mLSTM has one such cond per step (keep h and c at a pad step: a Select, 0 FLOPs, or nothing;
the gate products run before it). Dilated convolutions run as SpaceToBatchND -> Conv2D -> BatchToSpaceND,
so the count includes the zero padding those convolutions really compute.

Cross-check (`gflops_analytic`): the dominant terms from the layer shapes alone, every Conv2D layer of
the Keras model (2 * out_h * out_w * C_out * kh * kw * C_in), plus
- RMI mLSTM (u = 500, 40x40 = 1600 pixels): visual term 1600 x 1008 x 2000 x 2 once, recurrent term
  1600 x 500 x 2000 x 2 per word, word term 2000 x 2000 x 2 per word; language LSTM 2000 x 4000 x 2 per word;
- LG-LSTM (d = 64, 41x41 = 1681 positions, D_H = 1152): transition 1681 x 1024 x (8 + 1) x 256 x 2,
  then 5 layers of 1681 x 1152 x 512 x 2 (the shared spatial gates and the depth gates in one product).
At paper size: the ResNet-101 convolutions (output stride 8, fc1000's 6.6 included) ~145 GFLOPs at 320x320,
the mLSTM + language LSTM ~71 (6.5 visual term + 20 x 3.2 recurrent term); the DeepLab-LargeFOV VGG-16
~102 GFLOPs at 321x321 (15.9 of them fc6, the dilation-12 3x3 conv), the LG-LSTM part ~18 (transition
7.9 + 5 x 1.98). `profiler_over_analytic` is the ratio of the two counts: the rest is elementwise work and,
for LG-LSTM (~1.06), the padding the SpaceToBatchND form of fc6 and conv5_x computes.
"""

import argparse
import collections
import json
import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from _common import feature_size, matmul_gflops_per_s, min_ms, rmi_head_flops
from tensorflow.python.framework import ops as framework_ops
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from tf_recurrent_seg.defaults import parsing_config, referring_config
from tf_recurrent_seg.layers.lg_lstm import input_state_channels
from tf_recurrent_seg.models import build_lg_lstm, build_rmi

FRACTION_TARGET = 0.5
WORDS = 20
# Ops that mean the graph holds a loop (or functional control flow, whose bodies the profiler does not see):
# a loop body would be counted once however many times it runs.
LOOP_OPS = frozenset(
    {
        "While",
        "StatelessWhile",
        "If",
        "StatelessIf",
        "Case",
        "StatelessCase",
        "Enter",
        "Exit",
        "NextIteration",
        "LoopCond",
    }
)
# Lowered conds (Switch / Merge) are not refused here: both branches sit in the top-level graph, the profiler
# adds both, and `count_flops` checks that no branch op has a registered count (see `cond_branch_ops`).


# ---------------------------------------------------------------------------------------------- counting


def frozen_graph(function, input_signature) -> tf.Graph:
    """The graph of `function` traced on `input_signature` (TensorSpecs), variables frozen into constants."""
    concrete = tf.function(function).get_concrete_function(*input_signature)
    return convert_variables_to_constants_v2(concrete).graph


def _registered_flops(graph, op):
    """TensorFlow's registered FLOPs of `op` (0 for ops without a registered count); None: shape unknown."""
    try:
        return int(framework_ops.get_stats_for_node_def(graph, op.node_def, "flops").value or 0)
    except ValueError:  # a registered count needing a shape the graph does not know
        return None


def cond_branch_ops(graph: tf.Graph) -> list:
    """The ops of `graph` (loop-free, conds lowered to Switch / Merge) that run on one branch of a cond only.

    Each op gets the set of (Switch, branch) pairs it depends on, through data and control inputs: a Switch's
    output `k` adds (that Switch, k); a Merge keeps only what all its inputs share (the branches it joins meet
    there, an enclosing cond's branch stays). An op with a non-empty set may not run in a given call.
    """
    operations = graph.get_operations()
    consumers = {op.name: set() for op in operations}
    waiting = {}
    for op in operations:
        producers = {tensor.op.name for tensor in op.inputs} | {control.name for control in op.control_inputs}
        waiting[op.name] = len(producers)
        for name in producers:
            consumers[name].add(op)
    contexts, ready = {}, [op for op in operations if waiting[op.name] == 0]
    while ready:  # Kahn's topological order: every input's set is known before its consumers'
        op = ready.pop()
        input_sets = [
            contexts[tensor.op.name] | ({(tensor.op.name, tensor.value_index)} if tensor.op.type == "Switch" else set())
            for tensor in op.inputs
        ] + [contexts[control.name] for control in op.control_inputs]
        if op.type == "Merge":
            contexts[op.name] = set.intersection(*input_sets) if input_sets else set()
        else:
            contexts[op.name] = set().union(*input_sets)
        for consumer in consumers[op.name]:
            waiting[consumer.name] -= 1
            if waiting[consumer.name] == 0:
                ready.append(consumer)
    if len(contexts) != len(operations):
        raise ValueError("the graph has a cycle (a loop); its body would be counted once")
    return [op for op in operations if contexts[op.name]]


def count_flops(function, input_signature) -> dict:
    """FLOPs of one call of `function`, counted by TensorFlow's profiler on the frozen graph.

    Args:
        function: a Python callable of TensorFlow ops / Keras models (traced with `tf.function`).
        input_signature: a list of `tf.TensorSpec` (or nested structures of them), every shape static.

    Returns:
        `{"flops": profiler total (int), "by_op": {op type: FLOPs}, "missing_shape": [op names],
        "cond_branch_ops": int}`; `by_op` comes from the same registered statistics walked op by op,
        `missing_shape` lists ops with a registered count that could not be computed (incomplete shapes; the
        profiler skips them), `cond_branch_ops` counts the ops inside cond branches (all with no registered
        FLOPs, so the total is the same whichever branch runs).

    Raises:
        ValueError: the graph has a loop (or unlowered functional control flow), whose body the profiler
            would count once however many times it runs: unroll the loop (e.g. `fixed_steps=True`) to count
            it; or a cond whose branches hold counted work, since the profiler adds both branches and only
            one runs.
    """
    graph = frozen_graph(function, input_signature)
    loops = sorted({op.type for op in graph.get_operations()} & LOOP_OPS)
    if loops:
        raise ValueError(f"the graph has control flow ops {loops}; the profiler would count their bodies once")
    # Lowered conds (Switch / Merge, as the RMI mLSTM's pad-step select) are counted only when no op inside a
    # branch has registered FLOPs: then the profiler's sum over both branches is the work of either.
    branch_ops = cond_branch_ops(graph)
    branch_flops = {op.name: _registered_flops(graph, op) for op in branch_ops}
    counted = sorted(name for name, value in branch_flops.items() if value is None or value > 0)
    if counted:
        raise ValueError(
            f"the graph has control flow (conds) with counted work inside a branch ({counted[:5]}); the profiler "
            "adds both branches though only one runs"
        )
    options = (
        tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
        .with_empty_output()
        .build()
    )
    total = int(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)
    by_op, missing = collections.Counter(), []
    for op in graph.get_operations():
        value = _registered_flops(graph, op)
        if value is None:
            missing.append(op.name)
        elif value:
            by_op[op.type] += value
    return {
        "flops": total,
        "by_op": dict(by_op.most_common()),
        "missing_shape": missing,
        "cond_branch_ops": len(branch_ops),
    }


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def conv_layer_flops(model) -> int:
    """2 * out_h * out_w * C_out * kh * kw * C_in summed over every Conv2D layer of `model` (nested models
    included), from the layers' own output shapes: the analytic count of the convolutions, batch 1."""
    total = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kernel_height, kernel_width, in_channels, _ = layer.kernel.shape
            total += 2 * height * width * out_channels * kernel_height * kernel_width * in_channels
    return int(total)


def lg_lstm_recurrent_flops(model_config, feature_side: int, feature_channels: int) -> int:
    """Analytic multiply-add work (x2) of the transition layer and the LG-LSTM layers, batch 1."""
    positions = feature_side**2
    gates = 4 * model_config.units
    directions = model_config.neighbourhood if model_config.distinct_spatial_weights else 1
    transition = 2 * positions * feature_channels * (directions + 1) * gates
    state_channels = input_state_channels(model_config.units, model_config.neighbourhood, model_config.use_global)
    layer = 2 * positions * state_channels * 2 * gates  # shared spatial gates + depth gates, one product
    return transition + model_config.num_layers * layer


# ------------------------------------------------------------------------------------------------ timing


def _rates(flops: int, ms: float, matmul_rate: float) -> dict:
    rate = flops / (ms * 1e-3) / 1e9
    return {
        "gflops": round(flops / 1e9, 2),
        "ms": round(ms, 1),
        "achieved_gflops_per_s": round(rate, 1),
        "fraction_of_matmul": round(rate / matmul_rate, 3),
    }


def _gflops_by_op(by_op: dict, top: int = 6) -> dict:
    return {name: round(value / 1e9, 2) for name, value in list(by_op.items())[:top]}


# ------------------------------------------------------------------------------------------------ models


def measure_rmi(repeats: int, rng) -> dict:
    """FLOPs and time of the RMI forward (and of its backbone and head) at paper size, 20 real words."""
    config = referring_config("rmi", "resnet")
    model_config = config.model
    size, side = model_config.image_size, feature_size(model_config)
    image = rng.normal(0, 50, (1, size, size, 3)).astype(np.float32)
    tokens = np.zeros((1, model_config.max_words), np.int32)
    tokens[0, -WORDS:] = rng.integers(4, model_config.vocabulary_size, WORDS)
    image_spec = tf.TensorSpec(image.shape, tf.float32)
    tokens_spec = tf.TensorSpec(tokens.shape, tf.int32)
    features_spec = tf.TensorSpec((1, side, side, model_config.backbone.classifier_units), tf.float32)

    # Counted on the unrolled twin (same layers and shapes; the looped model's while loop hides its body).
    def count_unrolled() -> tuple[int, int, int, int, int]:
        unrolled_config = referring_config("rmi", "resnet")
        unrolled_config.model.fixed_steps = True
        unrolled = build_rmi(unrolled_config)  # freed on return, before the timed model is built
        return (
            count_flops(lambda x, t: unrolled({"image": x, "tokens": t}), [image_spec, tokens_spec]),
            count_flops(lambda x: unrolled.backbone(x), [image_spec]),
            count_flops(lambda f, t: unrolled.head({"visual_features": f, "tokens": t}), [features_spec, tokens_spec]),
            conv_layer_flops(unrolled) + rmi_head_flops(model_config, WORDS),
            conv_layer_flops(unrolled.backbone),
        )

    total, backbone_count, head_count, analytic, backbone_convs = count_unrolled()

    model = build_rmi(config)  # what is timed: the package's model as configured (trimmed, looped)
    forward = tf.function(lambda x, t: model({"image": x, "tokens": t}))
    backbone = tf.function(lambda x: model.backbone(x))
    head = tf.function(lambda f, t: model.head({"visual_features": f, "tokens": t}))
    features = np.asarray(backbone(image))
    return {
        "flops": total,
        "analytic": analytic,
        "backbone_conv_flops": backbone_convs,
        "ms": min_ms(forward, image, tokens, repeats=repeats),
        "parts": {
            "backbone": (backbone_count["flops"], min_ms(backbone, image, repeats=repeats)),
            "head": (head_count["flops"], min_ms(head, features, tokens, repeats=repeats)),
        },
    }


def measure_lg_lstm(repeats: int, rng) -> dict:
    """FLOPs and time of the LG-LSTM forward (and of its backbone and the rest) at paper size."""
    config = parsing_config("lg_lstm")
    model_config = config.model
    model = build_lg_lstm(config)
    backbone_layer = model.get_layer("backbone")
    size = model_config.image_size
    image = rng.normal(0, 50, (1, size, size, 3)).astype(np.float32)
    image_spec = tf.TensorSpec(image.shape, tf.float32)
    _, side, _, channels = backbone_layer.output.shape

    total = count_flops(lambda x: model(x), [image_spec])
    backbone_count = count_flops(lambda x: backbone_layer(x), [image_spec])
    analytic = conv_layer_flops(model) + lg_lstm_recurrent_flops(model_config, side, channels)

    forward = tf.function(lambda x: model(x))
    backbone = tf.function(lambda x: backbone_layer(x))
    model_ms = min_ms(forward, image, repeats=repeats)
    backbone_ms = min_ms(backbone, image, repeats=repeats)
    return {
        "flops": total,
        "analytic": analytic,
        "backbone_conv_flops": conv_layer_flops(backbone_layer),
        "ms": model_ms,
        "parts": {
            "backbone": (backbone_count["flops"], backbone_ms),
            # The rest (transition, 5 LG-LSTM layers, predictions, upsampling): whole minus backbone.
            "head": (total["flops"] - backbone_count["flops"], max(model_ms - backbone_ms, 1e-3)),
        },
    }


def summarize(measured: dict, matmul_rate: float) -> dict:
    count = measured["flops"]
    result = _rates(count["flops"], measured["ms"], matmul_rate)
    result.update(
        gflops_analytic=round(measured["analytic"] / 1e9, 2),
        profiler_over_analytic=round(count["flops"] / measured["analytic"], 3),
        backbone_conv_gflops=round(measured["backbone_conv_flops"] / 1e9, 2),
        gflops_by_op=_gflops_by_op(count["by_op"]),
        ops_missing_shape=len(count["missing_shape"]),
        ops_in_cond_branches=count["cond_branch_ops"],  # none with a registered count (count_flops checks)
        parts={name: _rates(part_flops, ms, matmul_rate) for name, (part_flops, ms) in measured["parts"].items()},
    )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matmul_sizes", default="2048,4096")
    parser.add_argument("--matmul_repeats", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(size) for size in args.matmul_sizes.split(",")]
    rng = np.random.default_rng(0)

    matmul_runs = {f"{size}_before": matmul_gflops_per_s(size, args.matmul_repeats) for size in sizes}
    rmi = measure_rmi(args.repeats, rng)
    lg_lstm = measure_lg_lstm(args.repeats, rng)
    matmul_runs[f"{max(sizes)}_after"] = matmul_gflops_per_s(max(sizes), args.matmul_repeats)
    matmul_rate = max(matmul_runs.values())

    print(
        json.dumps(
            {
                "benchmark": "roofline",
                "matmul_gflops_per_s": round(matmul_rate, 1),
                "matmul_runs_gflops_per_s": {name: round(rate, 1) for name, rate in matmul_runs.items()},
                "rmi": summarize(rmi, matmul_rate),
                "lg_lstm": summarize(lg_lstm, matmul_rate),
                "targets": {"fraction_of_matmul": FRACTION_TARGET},
                "words": WORDS,
                "batch": 1,
                "repeats": args.repeats,
                "cpu_count": os.cpu_count(),
                "tensorflow": tf.__version__,
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
