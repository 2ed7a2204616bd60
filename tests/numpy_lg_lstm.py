"""Numpy (float64) LG-LSTM reference written from LG-LSTM paper §3 (eq. 1-4, global hidden cells) and
docs/equations.md.

Deliberately naive: explicit Python loops over batch, positions, the k spatial LSTMs and the depth LSTM,
explicit neighbour indexing and the literal 3x3 grid max. Nothing here calls the package.

Conventions (the layer contract):
- neighbour offsets (dy, dx) per neighbourhood size; slot n of H at j = (y, x) holds the hidden cell that
  spatial LSTM n computed AT (y + dy_n, x + dx_n), zeros outside the map;
- gate order [input, forget, output, candidate]; m' = f*m + i*c; hidden "grid": tanh(o*m'),
  "standard": o*tanh(m');
- H_j = [f (9d, only if use_global) ; slot 1..k ; own depth hidden], f = grid max of the depth hidden map,
  grid cell (r, c) at channels (r*3 + c)*d, rows [floor(r*H/3), ceil((r+1)*H/3)), columns likewise.
"""

import math

import numpy as np

OFFSETS = {
    8: ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)),
    4: ((-1, -1), (-1, 0), (-1, 1), (0, -1)),
    2: ((-1, 0), (0, -1)),
}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def grid_bins(size):
    """The three [start, stop) ranges of one axis: [floor(r*size/3), ceil((r+1)*size/3))."""
    return [(math.floor(r * size / 3), math.ceil((r + 1) * size / 3)) for r in range(3)]


def grid_max_pool(x):
    """x (B, H, W, d) -> (B, 9*d): cell (r, c) at channels [(r*3+c)*d, (r*3+c+1)*d), max over the cell."""
    x = np.asarray(x, np.float64)
    batch, height, width, d = x.shape
    out = np.zeros((batch, 9 * d))
    row_bins, col_bins = grid_bins(height), grid_bins(width)
    for b in range(batch):
        for r in range(3):
            for c in range(3):
                y0, y1 = row_bins[r]
                x0, x1 = col_bins[c]
                for ch in range(d):
                    best = -np.inf
                    for y in range(y0, y1):
                        for xx in range(x0, x1):
                            best = max(best, x[b, y, xx, ch])
                    out[b, (r * 3 + c) * d + ch] = best
    return out


def lstm_cell(z, memory, hidden_form):
    """Eq. (1) on a pre-activation z = W*H (4d, order [input, forget, output, candidate]) and a memory (d)."""
    d = memory.shape[-1]
    gate_in = sigmoid(z[0:d])
    gate_forget = sigmoid(z[d : 2 * d])
    gate_out = sigmoid(z[2 * d : 3 * d])
    candidate = np.tanh(z[3 * d : 4 * d])
    new_memory = gate_forget * memory + gate_in * candidate
    if hidden_form == "grid":
        hidden = np.tanh(gate_out * new_memory)
    elif hidden_form == "standard":
        hidden = gate_out * np.tanh(new_memory)
    else:
        raise ValueError(hidden_form)
    return hidden, new_memory


def assemble_input_state(spatial_hidden, depth_hidden, neighbourhood, use_global):
    """Eq. (3): H_j = [f ; h^s_{j,1..k} (from the neighbours) ; h^e_j].

    spatial_hidden (B, H, W, k, d): hidden cell computed by spatial LSTM n AT each position (the outgoing
    ĥ of eq. 4); depth_hidden (B, H, W, d).
    """
    batch, height, width, k, d = spatial_hidden.shape
    offsets = OFFSETS[neighbourhood]
    assert k == len(offsets)
    global_cells = grid_max_pool(depth_hidden) if use_global else None
    d_h = (9 * int(use_global) + k + 1) * d
    out = np.zeros((batch, height, width, d_h))
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                parts = []
                if use_global:
                    parts.append(global_cells[b])
                for n, (dy, dx) in enumerate(offsets):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width:
                        parts.append(spatial_hidden[b, ny, nx, n])
                    else:
                        parts.append(np.zeros(d))
                parts.append(depth_hidden[b, y, x])
                out[b, y, x] = np.concatenate(parts)
    return out


def transition(
    features,
    spatial_kernel,
    spatial_bias,
    depth_kernel,
    depth_bias,
    neighbourhood=8,
    use_global=True,
    hidden_form="grid",
    distinct_spatial_weights=True,
):
    """Transition layer: k spatial LSTMs + depth LSTM on the conv features of each position, zero memories.

    Returns [H, spatial_memory (B, H, W, k, d), depth_memory (B, H, W, d)].
    """
    features = np.asarray(features, np.float64)
    batch, height, width, _ = features.shape
    k = len(OFFSETS[neighbourhood])
    d = depth_kernel.shape[1] // 4
    spatial_hidden = np.zeros((batch, height, width, k, d))
    spatial_memory = np.zeros((batch, height, width, k, d))
    depth_hidden = np.zeros((batch, height, width, d))
    depth_memory = np.zeros((batch, height, width, d))
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                x_j = features[b, y, x]
                for n in range(k):
                    if distinct_spatial_weights:
                        w = spatial_kernel[:, n * 4 * d : (n + 1) * 4 * d]
                        bias = spatial_bias[n * 4 * d : (n + 1) * 4 * d]
                    else:
                        w, bias = spatial_kernel, spatial_bias
                    z = x_j @ w + bias
                    h, m = lstm_cell(z, np.zeros(d), hidden_form)
                    spatial_hidden[b, y, x, n] = h
                    spatial_memory[b, y, x, n] = m
                z = x_j @ depth_kernel + depth_bias
                h, m = lstm_cell(z, np.zeros(d), hidden_form)
                depth_hidden[b, y, x] = h
                depth_memory[b, y, x] = m
    state = assemble_input_state(spatial_hidden, depth_hidden, neighbourhood, use_global)
    return [state, spatial_memory, depth_memory]


def lg_lstm_layer(
    state,
    spatial_memory,
    depth_memory,
    spatial_kernel,
    spatial_bias,
    depth_kernel,
    depth_bias,
    neighbourhood=8,
    use_global=True,
    hidden_form="grid",
):
    """Eq. (4): each of the k spatial LSTMs (shared W^s, own memory) and the depth LSTM read H_j."""
    state = np.asarray(state, np.float64)
    spatial_memory = np.asarray(spatial_memory, np.float64)
    depth_memory = np.asarray(depth_memory, np.float64)
    batch, height, width, _ = state.shape
    k = len(OFFSETS[neighbourhood])
    d = depth_kernel.shape[1] // 4
    new_spatial_hidden = np.zeros((batch, height, width, k, d))
    new_spatial_memory = np.zeros((batch, height, width, k, d))
    new_depth_hidden = np.zeros((batch, height, width, d))
    new_depth_memory = np.zeros((batch, height, width, d))
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                h_j = state[b, y, x]
                for n in range(k):
                    z = h_j @ spatial_kernel + spatial_bias  # recomputed per LSTM, literally as eq. (4)
                    h, m = lstm_cell(z, spatial_memory[b, y, x, n], hidden_form)
                    new_spatial_hidden[b, y, x, n] = h
                    new_spatial_memory[b, y, x, n] = m
                z = h_j @ depth_kernel + depth_bias
                h, m = lstm_cell(z, depth_memory[b, y, x], hidden_form)
                new_depth_hidden[b, y, x] = h
                new_depth_memory[b, y, x] = m
    new_state = assemble_input_state(new_spatial_hidden, new_depth_hidden, neighbourhood, use_global)
    return [new_state, new_spatial_memory, new_depth_memory]
