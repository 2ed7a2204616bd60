"""Factorized vs concatenated mLSTM gates in the paper-size RMI head (40x40 features, batch 1).

    python benchmarks/mlstm.py

Prints one JSON line. `naive_ms` runs the concatenated per-step 1x1 convolution the reference code
computes (every pixel, every step: [visual; word; language; spatial; hidden] x the full gate matrix);
`factorized_ms` runs the package's RMI head. Both at 20 real words, same weights, in this process.
`ms_3_words` / `ms_20_words` time the package's head at 3 and 20 real words (leading pads are trimmed,
so cost follows the expression's length). Targets on a 2-core CPU: speedup >= 5, max_abs_diff <= 1e-4,
ms_20_words / ms_3_words >= 3.
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from tf_recurrent_seg.defaults import referring_config
from tf_recurrent_seg.models.referring import build_rmi_head, feature_size

REPEATS = 5  # the minimum over repeats: the least disturbed run on a shared machine (timeit's habit)


def naive_head(head):
    """The head with the mLSTM computed in the concatenated form, sharing `head`'s weights."""
    embedding = head.get_layer("embedding")
    language_lstm = head.get_layer("language_lstm")
    cell = head.get_layer("mlstm").cell
    classifier = head.get_layer("conv2")
    atanh = head.get_layer("atanh")
    kernel = cell.concatenated_kernel()  # rows: [visual, spatial | word, language | hidden]

    @tf.function
    def run(visual_features, tokens):
        visual_spatial = head.get_layer("visual_spatial")(
            [head.get_layer("visual_l2")(visual_features), head.get_layer("spatial_coordinates")(visual_features)]
        )
        height, width = visual_spatial.shape[1], visual_spatial.shape[2]
        pixels = tf.reshape(visual_spatial, (height * width, -1))
        embedded = embedding(tokens)
        language = head.get_layer("language_l2")(language_lstm(embedded, mask=tokens != 0))
        words = tf.concat([embedded, language], axis=-1)[0]  # batch 1
        hidden = tf.zeros((height * width, cell.units))
        memory = tf.zeros((height * width, cell.units))
        for t in range(tokens.shape[1]):  # the reference's 20 steps, pad steps skipped by a cond

            def step(hidden=hidden, memory=memory, t=t):
                word = tf.broadcast_to(words[t], (height * width, words.shape[-1]))
                gates = tf.matmul(tf.concat([pixels, word, hidden], axis=1), kernel) + cell.bias
                i, j, f, o = tf.split(gates, 4, axis=1)
                new_memory = tf.sigmoid(f + cell.forget_bias) * memory + tf.sigmoid(i) * tf.tanh(j)
                return tf.sigmoid(o) * tf.tanh(new_memory), new_memory

            hidden, memory = tf.cond(tokens[0, t] == 0, lambda: (hidden, memory), step)
        hidden = tf.reshape(hidden, (1, height, width, cell.units))
        return classifier(tf.nn.relu(atanh(hidden)))

    return run


def min_ms(function, *args):
    function(*args)  # trace and warm up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        np.asarray(function(*args))
        times.append((time.perf_counter() - start) * 1000)
    return float(np.min(times))


def tokens_with_words(count, vocabulary_size, rng):
    tokens = np.zeros((1, 20), np.int32)
    tokens[0, 20 - count :] = rng.integers(4, vocabulary_size, size=count)
    return tokens


def main():
    config = referring_config("rmi", "resnet")
    head = build_rmi_head(config.model)
    rng = np.random.default_rng(0)
    side = feature_size(config.model)
    visual = rng.normal(size=(1, side, side, config.model.visual_dim)).astype(np.float32)
    tokens_3 = tokens_with_words(3, config.model.vocabulary_size, rng)
    tokens_20 = tokens_with_words(20, config.model.vocabulary_size, rng)

    factorized = tf.function(lambda v, t: head({"visual_features": v, "tokens": t})["logits_lowres"])
    naive = naive_head(head)
    max_abs_diff = float(
        np.max(np.abs(np.asarray(naive(visual, tokens_20)) - np.asarray(factorized(visual, tokens_20))))
    )
    naive_ms = min_ms(naive, visual, tokens_20)
    ms_20 = min_ms(factorized, visual, tokens_20)
    ms_3 = min_ms(factorized, visual, tokens_3)
    print(
        json.dumps(
            {
                "benchmark": "mlstm",
                "naive_ms": round(naive_ms, 1),
                "factorized_ms": round(ms_20, 1),
                "speedup": round(naive_ms / ms_20, 2),
                "max_abs_diff": max_abs_diff,
                "ms_3_words": round(ms_3, 1),
                "ms_20_words": round(ms_20, 1),
                "ratio_20_to_3_words": round(ms_20 / ms_3, 2),
                "feature_size": side,
                "batch": 1,
                "repeats": REPEATS,
            }
        )
    )


if __name__ == "__main__":
    main()
