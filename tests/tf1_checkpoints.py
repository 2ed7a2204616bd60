"""Writes checkpoints the way the authors' TF1 code does: tf.compat.v1 variables, named by op name, saved
with tf.compat.v1.train.Saver. Used by the importer tests."""

import numpy as np
import tensorflow as tf

CELL = "multi_rnn_cell/cell_0/basic_lstm_cell"


def write_tf1_checkpoint(prefix: str, arrays: dict[str, np.ndarray]) -> str:
    """Saves `arrays` (full TF1 variable names -> values) as a TF1 V2 checkpoint at `prefix`."""
    graph = tf.Graph()
    with graph.as_default():
        variables = [
            tf.compat.v1.get_variable(name, initializer=tf.constant(value), use_resource=False)
            for name, value in arrays.items()
        ]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, prefix, write_meta_graph=False)


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
            full[f"text_objseg/{scope}/{CELL}/{kind}"] = value
        else:
            full[f"text_objseg/{key}"] = value
    return full
