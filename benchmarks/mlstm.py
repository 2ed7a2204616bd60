"""The paper-size RMI head (40x40 features, batch 1): the concatenated mLSTM form against the package's
factorized head, forward and forward + backward, at 3 and 20 words, against this run's matmul rate.

    python benchmarks/mlstm.py

Prints one JSON line. In one process:
- `matmul_gflops_per_s`: a 2048 x 2048 float32 matmul, the rate this machine reaches on a friendly dense
  product while the process runs (best of the repeats);
- `tf1_graph`: the reference's graph as the authors' TF1 code builds it, run by a `tf.compat.v1.Session`
  (`tf1_graph_head`), with the same weights;
- `concatenated`: the head with the mLSTM computed as the reference code does, every pixel and every step
  multiplying [visual; spatial; word; language; hidden] (3508 channels at paper size) by the full gate
  matrix (pad steps skipped by a `tf.cond`, as the reference does);
- `factorized`: the package's RMI head (`RMIHead`), forward;
- `factorized_backward`: its forward + backward (gradients of a fixed random projection of the logits with
  respect to every head weight), what a training step on cached features computes besides the optimizer.
Each at 3 and 20 real words (`ms`, analytic `gflops`, and `fraction_of_matmul`: the time the analytic work
would take at the matmul rate, over the time measured). Summary keys: `speedup` (concatenated over
factorized forward at 20 words; target >= 6, theory about 6.4), `max_abs_diff` of their logits (<= 1e-4),
`ratio_20_to_3_words` of the factorized forward (>= 3: pad steps are trimmed, cost follows the words),
`speedup_over_tf1_graph` (the TF1 graph over the factorized forward at 20 words; target >= 6) and
`tf1_max_abs_diff` of their logits (<= 1e-4).
Times are the minimum over `REPEATS` calls after one warm-up call (timeit's habit on a shared machine), the
three forwards timed in turn within each repeat so that a change in the machine's load hits them alike.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from _common import feature_size, interleaved_min_ms, matmul_gflops_per_s, min_ms, rmi_head_flops

from tf_recurrent_seg.defaults import referring_config
from tf_recurrent_seg.models import build_rmi

REPEATS = 5  # the minimum over repeats: the least disturbed run on a shared machine (timeit's habit)
MATMUL_SIZE = 2048


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


def tf1_graph_head(head, visual_features: np.ndarray, max_words: int):
    """The reference's graph, built and run the TF1 way (`tf.compat.v1.Session`, placeholders, a Python loop
    unrolled over the `max_words` steps, each pad step skipped by a `tf.cond`), with `head`'s weights as constants:
    at every word the [visual; spatial; word; language] map (the word and language vectors tiled over the image)
    and the hidden state, concatenated, go through one 1x1 convolution with the whole gate matrix; the language
    LSTM is one product of [word; hidden]. Returns `run(tokens) -> logits_lowres`."""
    cell = head.get_layer("mlstm").cell
    lstm_cell = head.get_layer("language_lstm").cell
    units, language_units = cell.units, lstm_cell.units
    spatial = np.asarray(head.get_layer("spatial_coordinates")(visual_features))  # the reference feeds it as input
    kernel = np.asarray(cell.concatenated_kernel())  # rows: [visual, spatial | word, language | hidden]
    language_kernel = np.concatenate([np.asarray(lstm_cell.kernel), np.asarray(lstm_cell.recurrent_kernel)])
    classifier_kernel, classifier_bias = (np.asarray(w) for w in head.get_layer("conv2").weights)
    embeddings = np.asarray(head.get_layer("embedding").embeddings)
    language_bias, bias = np.asarray(lstm_cell.bias), np.asarray(cell.bias)  # read while eager, outside the graph

    def l2_normalize(x, layer):
        epsilon = head.get_layer(layer).epsilon
        return x * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(x), axis=-1, keepdims=True), epsilon))

    graph = tf.Graph()
    with graph.as_default():
        visual = tf.compat.v1.placeholder(tf.float32, visual_features.shape)
        tokens = tf.compat.v1.placeholder(tf.int32, (1, max_words))
        _, height, width, _ = visual_features.shape
        visual_spatial = tf.concat([l2_normalize(visual, "visual_l2"), tf.constant(spatial)], axis=3)
        embedded = tf.nn.embedding_lookup(tf.constant(embeddings), tokens)
        # One graph constant per weight (the reference's variables), shared by the unrolled steps.
        kernel_constant, language_kernel_constant = tf.constant(kernel[None, None]), tf.constant(language_kernel)
        state = (tf.zeros((1, language_units)),) * 2 + (tf.zeros((1, height, width, units)),) * 2

        def step(t, language_h, language_c, hidden, memory):
            i, f, g, o = tf.split(  # the language LSTM (Keras gate order: i, f, candidate, o)
                tf.matmul(tf.concat([embedded[:, t], language_h], 1), language_kernel_constant) + language_bias,
                4,
                axis=1,
            )
            language_c = tf.sigmoid(f) * language_c + tf.sigmoid(i) * tf.tanh(g)
            language_h = tf.sigmoid(o) * tf.tanh(language_c)
            word = tf.concat([embedded[:, t], l2_normalize(language_h, "language_l2")], axis=1)
            tiled = tf.tile(word[:, None, None, :], (1, height, width, 1))
            inputs = tf.concat([visual_spatial, tiled, hidden], axis=3)
            gates = tf.nn.conv2d(inputs, kernel_constant, strides=1, padding="VALID") + bias
            i, j, f, o = tf.split(gates, 4, axis=3)  # the mLSTM (BasicLSTMCell order: i, j, f, o)
            memory = tf.sigmoid(f + cell.forget_bias) * memory + tf.sigmoid(i) * tf.tanh(j)
            return language_h, language_c, tf.sigmoid(o) * tf.tanh(memory), memory

        for t in range(max_words):
            state = tf.cond(tokens[0, t] > 0, lambda t=t, state=state: step(t, *state), lambda state=state: state)
        atanh = head.get_layer("atanh")
        hidden = state[2]
        response = 0.5 * (tf.math.log(1.0 + atanh.epsilon + hidden) - tf.math.log(1.0 + atanh.epsilon - hidden))
        logits = tf.nn.conv2d(tf.nn.relu(response), classifier_kernel, strides=1, padding="VALID") + classifier_bias
    session = tf.compat.v1.Session(graph=graph)

    def run(visual_value, tokens_value):
        return session.run(logits, {visual: visual_value, tokens: tokens_value})

    return run


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


def timed(ms: float, gflops: float, matmul_rate: float) -> dict:
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
    head = build_rmi(config, include_backbone=False).head
    rng = np.random.default_rng(0)
    side = feature_size(config.model)
    visual = rng.normal(size=(1, side, side, config.model.visual_dim)).astype(np.float32)
    tokens = {words: tokens_with_words(words, config.model.vocabulary_size, rng) for words in (3, 20)}

    factorized = tf.function(lambda v, t: head({"visual_features": v, "tokens": t})["logits_lowres"])
    naive = naive_head(head)
    tf1_graph = tf1_graph_head(head, visual, tokens[20].shape[1])
    backward = forward_and_backward(head)
    reference_logits = np.asarray(factorized(visual, tokens[20]))
    max_abs_diff = float(np.max(np.abs(np.asarray(naive(visual, tokens[20])) - reference_logits)))
    tf1_max_abs_diff = float(np.max(np.abs(tf1_graph(visual, tokens[20]) - reference_logits)))
    matmul_rate = matmul_gflops_per_s(MATMUL_SIZE, REPEATS)
    results = {"tf1_graph": {}, "concatenated": {}, "factorized": {}, "factorized_backward": {}}
    for words, words_tokens in tokens.items():
        key = f"{words}_words"
        factorized_gflops = rmi_head_flops(config.model, words) / 1e9
        concatenated_gflops = rmi_head_flops(config.model, words, concatenated=True) / 1e9
        # The three forwards timed in turn within each repeat: their ratios are fair on a shared machine.
        forwards_ms = interleaved_min_ms([tf1_graph, naive, factorized], visual, words_tokens, repeats=REPEATS)
        backward_ms = min_ms(backward, visual, words_tokens, repeats=REPEATS)
        # The backward pass does about twice the forward's products (gradients of inputs and of weights).
        for form, ms, gflops in zip(
            results,
            [*forwards_ms, backward_ms],
            [concatenated_gflops, concatenated_gflops, factorized_gflops, 3 * factorized_gflops],
        ):
            results[form][key] = (ms, gflops)
    # Again after the models: the best rate of the run.
    matmul_rate = max(matmul_rate, matmul_gflops_per_s(MATMUL_SIZE, REPEATS))
    results = {
        form: {key: timed(ms, gflops, matmul_rate) for key, (ms, gflops) in by_words.items()}
        for form, by_words in results.items()
    }
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
                "tf1_graph_ms": results["tf1_graph"]["20_words"]["ms"],
                "speedup_over_tf1_graph": round(results["tf1_graph"]["20_words"]["ms"] / forward["20_words"]["ms"], 2),
                "tf1_max_abs_diff": tf1_max_abs_diff,
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
