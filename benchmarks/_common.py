"""Timing and analytic work shared by the benchmark scripts (not a benchmark itself: `run_all` skips `_*.py`)."""

import math
import time

import keras
import numpy as np
import tensorflow as tf


def feature_size(model_config) -> int:
    """Side of a referring model's feature map: every stride-2 stage rounds up (TF 'SAME' arithmetic)."""
    return math.ceil(model_config.image_size / model_config.backbone.output_stride)


def interleaved_min_ms(functions, *args, repeats: int) -> list[float]:
    """The fastest call of each function in milliseconds, after one untimed warm-up (tracing) call each. Within
    every repeat the functions are timed in turn, so a change in the load of a shared machine hits all of them
    alike and their ratios stay fair; the minimum is the least disturbed run (timeit's habit)."""
    for function in functions:
        keras.tree.map_structure(np.asarray, function(*args))
    times = [[] for _ in functions]
    for _ in range(repeats):
        for function, function_times in zip(functions, times):
            start = time.perf_counter()
            keras.tree.map_structure(np.asarray, function(*args))
            function_times.append((time.perf_counter() - start) * 1000)
    return [float(min(function_times)) for function_times in times]


def min_ms(function, *args, repeats: int) -> float:
    """`interleaved_min_ms` of one function."""
    return interleaved_min_ms([function], *args, repeats=repeats)[0]


def matmul_gflops_per_s(size: int, repeats: int) -> float:
    """GFLOP/s of a (size x size) @ (size x size) float32 matmul, 2 * size**3 FLOPs."""
    a = tf.random.normal((size, size), seed=1)
    b = tf.random.normal((size, size), seed=2)
    return 2 * size**3 / (min_ms(tf.function(tf.matmul), a, b, repeats=repeats) * 1e-3) / 1e9


def rmi_head_flops(model_config, words: int, concatenated: bool = False) -> int:
    """Multiply-add work (x2) of the RMI head's products at batch 1 (resnet variant): language LSTM and mLSTM.

    Factorized (the package): the visual term once per image, then per word the recurrent product at every pixel
    and the word term once. Concatenated (the reference's form): per word, every pixel's whole
    [visual; spatial; word; language; hidden] input times the gate matrix."""
    assert model_config.backbone.variant == "resnet"  # fc1000's output is the visual feature
    pixels = feature_size(model_config) ** 2
    gates = 4 * model_config.mlstm_units
    visual_channels = model_config.visual_dim + 8  # + the 8 spatial-coordinate channels
    word_channels = model_config.embedding_dim + model_config.language_units
    language = 2 * word_channels * 4 * model_config.language_units
    if concatenated:
        per_word = 2 * pixels * (visual_channels + word_channels + model_config.mlstm_units) * gates
        return words * (per_word + language)
    visual_term = 2 * pixels * visual_channels * gates
    per_word = 2 * pixels * model_config.mlstm_units * gates + 2 * word_channels * gates
    return visual_term + words * (per_word + language)
