"""Numpy (float64) re-implementations written from docs/equations.md and docs/tf1_checkpoints.md, for tests.

Weights come in the TF1 checkpoint layout (names relative to `text_objseg/`), so the same arrays feed the
importer and this reference. Nothing here calls the package.
"""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def l2_normalize(x, epsilon=1e-12):
    return x / np.sqrt(np.maximum(np.sum(x * x, axis=-1, keepdims=True), epsilon))


def spatial_map(height, width):
    """[xmin, ymin, xmax, ymax, xctr, yctr, 1/W, 1/H] at every (row h, column w), written per cell."""
    grid = np.zeros((height, width, 8))
    for h in range(height):
        for w in range(width):
            xmin, xmax = 2 * w / width - 1, 2 * (w + 1) / width - 1
            ymin, ymax = 2 * h / height - 1, 2 * (h + 1) / height - 1
            grid[h, w] = [xmin, ymin, xmax, ymax, (xmin + xmax) / 2, (ymin + ymax) / 2, 1 / width, 1 / height]
    return grid


def tf1_lstm_step(x, state, kernel, bias, forget_bias=1.0):
    """TF1 BasicLSTMCell: z = [x, h] @ kernel + bias, columns (i, j, f, o); state = (c, h)."""
    c, h = state
    z = np.concatenate([x, h], axis=-1) @ kernel + bias
    i, j, f, o = np.split(z, 4, axis=-1)
    c = sigmoid(f + forget_bias) * c + sigmoid(i) * np.tanh(j)
    h = sigmoid(o) * np.tanh(c)
    return c, h


def legacy_bilinear(image, out_h, out_w):
    """TF1 resize_bilinear, align_corners=False, no half-pixel centres: source = i * in/out."""
    in_h, in_w = image.shape[:2]
    out = np.zeros((out_h, out_w) + image.shape[2:])
    for y in range(out_h):
        sy = y * in_h / out_h
        y0 = int(np.floor(sy))
        y1, dy = min(y0 + 1, in_h - 1), sy - y0
        for x in range(out_w):
            sx = x * in_w / out_w
            x0 = int(np.floor(sx))
            x1, dx = min(x0 + 1, in_w - 1), sx - x0
            top = image[y0, x0] + (image[y0, x1] - image[y0, x0]) * dx
            bottom = image[y1, x0] + (image[y1, x1] - image[y1, x0]) * dx
            out[y, x] = top + (bottom - top) * dy
    return out


def visual_feature(visual, weights):
    """conv0 (deeplab variant, if present) then L2 normalisation over channels."""
    if "conv0/DW" in weights:
        visual = visual @ weights["conv0/DW"][0, 0] + weights["conv0/biases"]
    return l2_normalize(visual)


def rmi_head(visual, tokens, weights, image_size, atanh_epsilon=1e-3):
    """RMI head for ONE example: visual (h, w, C), tokens (T,). Pixels are the rows of a batch, each running
    the concatenated LSTM on [v, w_t, h_t, s] + own hidden, as the reference graph does. Pad steps skipped."""
    height, width = visual.shape[:2]
    v = visual_feature(visual, weights).reshape(height * width, -1)
    s = spatial_map(height, width).reshape(height * width, 8)
    language_kernel, language_bias = weights["RNN/WLSTM/kernel"], weights["RNN/WLSTM/bias"]
    mlstm_kernel, mlstm_bias = weights["RNN/ALSTM/kernel"], weights["RNN/ALSTM/bias"]
    language_state = (np.zeros(language_bias.shape[0] // 4),) * 2
    units = mlstm_bias.shape[0] // 4
    mlstm_state = (np.zeros((height * width, units)),) * 2
    for token in tokens:
        if token == 0:
            continue
        embedding = weights["embedding"][token]
        language_state = tf1_lstm_step(embedding, language_state, language_kernel, language_bias)
        language = l2_normalize(language_state[1])
        per_pixel = np.concatenate(
            [v, np.tile(embedding, (height * width, 1)), np.tile(language, (height * width, 1)), s], axis=1
        )
        mlstm_state = tf1_lstm_step(per_pixel, mlstm_state, mlstm_kernel, mlstm_bias)
    hidden = mlstm_state[1].reshape(height, width, units)
    response = 0.5 * (np.log(1 + atanh_epsilon + hidden) - np.log(1 + atanh_epsilon - hidden))
    logits_lowres = np.maximum(response, 0) @ weights["conv2/DW"][0, 0] + weights["conv2/biases"]
    return {
        "logits_lowres": logits_lowres,
        "logits": legacy_bilinear(logits_lowres, image_size, image_size),
        "response_map": legacy_bilinear(response.mean(axis=-1, keepdims=True), image_size, image_size),
    }


def lstm_head(visual, tokens, weights, image_size):
    """LSTM-baseline head for ONE example: last language state, tiled, [v, lang, s] -> conv1 -> ReLU -> conv2."""
    height, width = visual.shape[:2]
    v = visual_feature(visual, weights)
    kernel, bias = weights["RNN/kernel"], weights["RNN/bias"]
    state = (np.zeros(bias.shape[0] // 4),) * 2
    for token in tokens:
        if token != 0:
            state = tf1_lstm_step(weights["embedding"][token], state, kernel, bias)
    language = np.broadcast_to(l2_normalize(state[1]), (height, width, state[1].shape[0]))
    features = np.concatenate([v, language, spatial_map(height, width)], axis=-1)
    hidden = np.maximum(features @ weights["conv1/DW"][0, 0] + weights["conv1/biases"], 0)
    logits_lowres = hidden @ weights["conv2/DW"][0, 0] + weights["conv2/biases"]
    return {"logits_lowres": logits_lowres, "logits": legacy_bilinear(logits_lowres, image_size, image_size)}
