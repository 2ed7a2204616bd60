"""The paper-size RMI head (40x40 features, batch 1): the concatenated mLSTM form against the package's
factorized head, forward and forward + backward, at 3 and 20 words, against this run's matmul rate.

    python benchmarks/mlstm.py

Prints one JSON line. In one process:
- `matmul_gflops_per_s`: a 2048 x 2048 float32 matmul, the rate this machine reaches on a friendly dense
  product while the process runs (best of the repeats);
- `concatenated`: the head with the mLSTM computed as the reference code does, every pixel and every step
  multiplying [visual; spatial; word; language; hidden] (3508 channels at paper size) by the full gate
  matrix (pad steps skipped by a `tf.cond`, as the reference does);
- `factorized`: the package's RMI head (`build_rmi_head`), forward;
- `factorized_backward`: its forward + backward (gradients of a fixed random projection of the logits with
  respect to every head weight), what a training step on cached features computes besides the optimizer.
Each at 3 and 20 real words (`ms`, analytic `gflops`, and `fraction_of_matmul`: the time the analytic work
would take at the matmul rate, over the time measured). Summary keys: `speedup` (concatenated over
factorized forward at 20 words; target >= 6, theory about 6.4), `max_abs_diff` of their logits (<= 1e-4),
`ratio_20_to_3_words` of the factorized forward (>= 3: pad steps are trimmed, cost follows the words).
Times are the minimum over `REPEATS` calls after one warm-up call (timeit's habit on a shared machine).
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from tf_recurrent_seg.defaults import referring_config
from tf_recurrent_seg.models.referring import build_rmi_head, feature_size

REPEATS = 5  # the minimum over repeats: the least disturbed run on a shared machine (timeit's habit)


def analytic_gflops(model_config, words: int, concatenated: bool) -> float:
    """Multiply-add work (x2) of the head's products at batch 1: mLSTM, language LSTM, word term."""
    pixels = feature_size(model_config) ** 2
    gates = 4 * model_config.mlstm_units
    visual_channels = model_config.visual_dim + 8  # + the 8 spatial-coordinate channels
    word_channels = model_config.embedding_dim + model_config.language_units
    language = 2 * word_channels * 4 * model_config.language_units
    if concatenated:  # every pixel, every word: the whole [visual; word; hidden] input times the gate matrix
        per_word = 2 * pixels * (visual_channels + word_channels + model_config.mlstm_units) * gates
        return words * (per_word + language) / 1e9
    visual_term = 2 * pixels * visual_channels * gates  # once per image
    per_word = 2 * pixels * model_config.mlstm_units * gates + 2 * word_channels * gates
    return (visual_term + words * (per_word + language)) / 1e9


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
    keras.tree.map_structure(np.asarray, function(*args))  # trace and warm up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        keras.tree.map_structure(np.asarray, function(*args))
        times.append((time.perf_counter() - start) * 1000)
    return float(np.min(times))


def matmul_gflops_per_s(size: int = 2048) -> float:
    a = tf.random.normal((size, size), seed=1)
    b = tf.random.normal((size, size), seed=2)
    return 2 * size**3 / (min_ms(tf.function(tf.matmul), a, b) * 1e-3) / 1e9


def forward_and_backward(head):
    """Gradients of a fixed random projection of the logits with respect to every head weight."""
    weights = head.trainable_variables

    @tf.function
    def run(visual_features, tokens):
        with tf.GradientTape() as tape:
            logits = head({"visual_features": visual_features, "tokens": tokens})["logits_lowres"]
            loss = tf.reduce_sum(logits * tf.random.stateless_normal(tf.shape(logits), seed=(1, 2)))
        return tape.gradient(loss, weights)

    return run


def timed(function, visual, tokens, gflops: float, matmul_rate: float) -> dict:
    ms = min_ms(function, visual, tokens)
    return {
        "ms": round(ms, 1),
        "gflops": round(gflops, 2),
        "fraction_of_matmul": round(gflops / matmul_rate / ms * 1e3, 3),
    }


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
    tokens = {words: tokens_with_words(words, config.model.vocabulary_size, rng) for words in (3, 20)}

    factorized = tf.function(lambda v, t: head({"visual_features": v, "tokens": t})["logits_lowres"])
    naive = naive_head(head)
    backward = forward_and_backward(head)
    max_abs_diff = float(
        np.max(np.abs(np.asarray(naive(visual, tokens[20])) - np.asarray(factorized(visual, tokens[20]))))
    )
    matmul_rate = matmul_gflops_per_s()
    results = {"concatenated": {}, "factorized": {}, "factorized_backward": {}}
    for words, words_tokens in tokens.items():
        key = f"{words}_words"
        factorized_gflops = analytic_gflops(config.model, words, concatenated=False)
        results["concatenated"][key] = timed(
            naive, visual, words_tokens, analytic_gflops(config.model, words, concatenated=True), matmul_rate
        )
        results["factorized"][key] = timed(factorized, visual, words_tokens, factorized_gflops, matmul_rate)
        # The backward pass does about twice the forward's products (gradients of inputs and of weights).
        results["factorized_backward"][key] = timed(backward, visual, words_tokens, 3 * factorized_gflops, matmul_rate)
    matmul_rate = max(matmul_rate, matmul_gflops_per_s())  # again after the models: the best rate of the run
    forward = results["factorized"]
    print(
        json.dumps(
            {
                "benchmark": "mlstm",
                "matmul_gflops_per_s": round(matmul_rate, 1),
                **results,
                "naive_ms": results["concatenated"]["20_words"]["ms"],
                "factorized_ms": forward["20_words"]["ms"],
                "speedup": round(results["concatenated"]["20_words"]["ms"] / forward["20_words"]["ms"], 2),
                "max_abs_diff": max_abs_diff,
                "ms_3_words": forward["3_words"]["ms"],
                "ms_20_words": forward["20_words"]["ms"],
                "ratio_20_to_3_words": round(forward["20_words"]["ms"] / forward["3_words"]["ms"], 2),
                "feature_size": side,
                "batch": 1,
                "repeats": REPEATS,
            }
        )
    )


if __name__ == "__main__":
    main()
