"""Local-Global LSTM layers for semantic object parsing (LG-LSTM paper §3).

At every position j an LG-LSTM layer reads the input state
    H_j = [f (9d, global) ; h^s_{j,1..k} (hidden cells sent by the k neighbours) ; h^e_j (own depth hidden)]
and runs k spatial LSTMs (one shared weight matrix, one memory each) and one depth LSTM on it. The new
hidden cells are assembled into the next layer's H: the slot of neighbour n at j holds the hidden cell
that spatial LSTM n computed at position j + offset_n, and f is a max over a 3x3 grid of the depth hidden
map. The transition layer makes the first H from convolutional features.

Because the k spatial LSTMs read the same H_j with the same weights, their gates are identical: they are
computed once per position (one matmul together with the depth LSTM's) and applied to the k memories.
Neighbours are gathered by shifting the hidden maps with zero padding (pad + slice, builtin TFLite ops);
measured against `keras.ops.image.extract_patches` on 41x41x(8x64) maps, shifting moves 9x less data
and ran faster (benchmarks/lg_lstm.py prints both).
"""

import keras

# Offsets (dy, dx) from the receiving position to each neighbour, in slot order (docs/equations.md#lg-lstm-input-state).
NEIGHBOURHOODS = {
    8: ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)),
    4: ((-1, -1), (-1, 0), (-1, 1), (0, -1)),  # the paper's "local 4": top-left, top, top-right, left
    2: ((-1, 0), (0, -1)),  # "local 2": top, left
}
HIDDEN_FORMS = ("grid", "standard")  # tanh(o * m') (Grid LSTM, docs/decisions.md#lg-lstm-hidden-form), or o * tanh(m')
GRID_CELLS = 3  # the global hidden cells come from a 3x3 grid (§3.2.2)


def _check_options(neighbourhood: int, hidden_form: str) -> None:
    if neighbourhood not in NEIGHBOURHOODS:
        raise ValueError(f"neighbourhood must be one of {sorted(NEIGHBOURHOODS)}, got {neighbourhood!r}")
    if hidden_form not in HIDDEN_FORMS:
        raise ValueError(f"hidden_form must be one of {HIDDEN_FORMS}, got {hidden_form!r}")


def grid_bins(size: int) -> list[tuple[int, int]]:
    """The 3 bins [floor(i * size / 3), ceil((i + 1) * size / 3)) of one axis; never empty."""
    return [((i * size) // GRID_CELLS, -((-(i + 1) * size) // GRID_CELLS)) for i in range(GRID_CELLS)]


def grid_max_pool(hidden_map):
    """(B, H, W, d) -> (B, 9 * d): the max of each cell of a 3x3 grid, cells in row-major order."""
    height, width = hidden_map.shape[1], hidden_map.shape[2]
    cells = [
        keras.ops.max(hidden_map[:, top:bottom, left:right, :], axis=(1, 2))
        for top, bottom in grid_bins(height)
        for left, right in grid_bins(width)
    ]
    return keras.ops.concatenate(cells, axis=-1)


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class GridMaxPool(keras.layers.Layer):
    """Global hidden cells: (B, H, W, d) -> (B, 9 * d), the max over each cell of a 3x3 grid.

    Cell (r, c) covers rows [floor(r * H / 3), ceil((r + 1) * H / 3)) and the columns likewise, so any size
    works (cells overlap when a side is not a multiple of 3). Needs a static height and width.

    Example:
    ```python
    global_cells = GridMaxPool()(keras.Input((41, 41, 64)))  # (None, 576)
    ```
    """

    def call(self, hidden_map):
        return grid_max_pool(hidden_map)


def shift_from_neighbour(hidden_map, offset: tuple[int, int]):
    """result[:, y, x] = hidden_map[:, y + dy, x + dx], zero where that position is outside the map."""
    dy, dx = offset
    padded = keras.ops.pad(hidden_map, [[0, 0], [1, 1], [1, 1], [0, 0]])
    row_stop = -1 + dy if dy < 1 else None
    column_stop = -1 + dx if dx < 1 else None
    return padded[:, 1 + dy : row_stop, 1 + dx : column_stop, :]


def assemble_input_state(spatial_hidden, depth_hidden, neighbourhood: int, use_global: bool):
    """Builds H = [f ; neighbour slots ; own depth hidden] from (B, H, W, k, d) and (B, H, W, d) hidden maps."""
    slots = [
        shift_from_neighbour(spatial_hidden[..., n, :], offset)
        for n, offset in enumerate(NEIGHBOURHOODS[neighbourhood])
    ]
    parts = slots + [depth_hidden]
    if use_global:
        pooled = grid_max_pool(depth_hidden)
        shape = keras.ops.shape(depth_hidden)
        parts.insert(
            0, keras.ops.broadcast_to(pooled[:, None, None, :], (shape[0], shape[1], shape[2], pooled.shape[-1]))
        )
    return keras.ops.concatenate(parts, axis=-1)


def input_state_channels(units: int, neighbourhood: int, use_global: bool) -> int:
    """D_H = (9 [global] + k + 1) * d."""
    return (GRID_CELLS * GRID_CELLS * use_global + neighbourhood + 1) * units


def _lstm_update(gates, memory, hidden_form: str):
    """Gate order [input, forget, output, candidate]; returns (hidden, memory). Broadcasts gates over memory."""
    input_gate, forget_gate, output_gate, candidate = keras.ops.split(gates, 4, axis=-1)
    memory = keras.ops.sigmoid(input_gate) * keras.ops.tanh(candidate) + (
        0.0 if memory is None else keras.ops.sigmoid(forget_gate) * memory
    )
    output_gate = keras.ops.sigmoid(output_gate)
    if hidden_form == "grid":
        return keras.ops.tanh(output_gate * memory), memory
    return output_gate * keras.ops.tanh(memory), memory


class _LocalGlobalBase(keras.layers.Layer):
    """Options shared by the transition and LG-LSTM layers."""

    def __init__(
        self,
        units: int,
        neighbourhood: int = 8,
        use_global: bool = True,
        hidden_form: str = "grid",
        kernel_initializer="lstm_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_options(neighbourhood, hidden_form)
        self.units = units
        self.neighbourhood = neighbourhood
        self.use_global = use_global
        self.hidden_form = hidden_form
        # The paper initialises LSTM weights uniformly in [-0.1, 0.1] (§4.1).
        self.kernel_initializer = kernel_initializer
        self._initializer = (
            keras.initializers.RandomUniform(-0.1, 0.1)
            if kernel_initializer == "lstm_uniform"
            else keras.initializers.get(kernel_initializer)
        )

    def _weight(self, name, shape, initializer=None):
        return self.add_weight(name=name, shape=shape, initializer=initializer or self._initializer)

    def _outputs(self, spatial_hidden, spatial_memory, depth_hidden, depth_memory):
        state = assemble_input_state(spatial_hidden, depth_hidden, self.neighbourhood, self.use_global)
        return [state, spatial_memory, depth_memory]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "neighbourhood": self.neighbourhood,
            "use_global": self.use_global,
            "hidden_form": self.hidden_form,
            "kernel_initializer": self.kernel_initializer
            if isinstance(self.kernel_initializer, str)
            else keras.initializers.serialize(self._initializer),
        }


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class TransitionLayer(_LocalGlobalBase):
    """Turns convolutional features into the first LG-LSTM input state (paper §3.1 "Transition Layer").

    k spatial LSTMs and one depth LSTM read the features at their own position, with zero memory; their
    hidden cells fill the neighbour slots and the depth slot of H, and f is the 3x3 grid max of the depth
    hidden map. The memories are handed on to the first LG-LSTM layer.

    Args:
        units: hidden cells d per LSTM (64 in the paper).
        neighbourhood: 8, 4 ("local 4") or 2 ("local 2") neighbours.
        use_global: include the global hidden cells f in H (False: the paper's "w/o global").
        hidden_form: "grid" (h = tanh(o * m), the paper's form) or "standard" (h = o * tanh(m)).
        distinct_spatial_weights: one weight matrix per direction (default). With one shared matrix all
            directions would hold identical memories forever (same input, weights and zero start), so the
            eight directions would collapse into one (docs/decisions.md#transition-layer-weights).
        kernel_initializer: "lstm_uniform" (uniform [-0.1, 0.1], §4.1) or a Keras initializer.

    Returns (from `call(features)`): [H (B, H, W, D_H), spatial memory (B, H, W, k, d), depth memory (B, H, W, d)].

    Example:
    ```python
    features = keras.Input((41, 41, 1024))
    state, spatial_memory, depth_memory = TransitionLayer(64)(features)  # state: (None, 41, 41, 1152)
    ```
    """

    def __init__(self, units: int, distinct_spatial_weights: bool = True, **kwargs):
        super().__init__(units, **kwargs)
        self.distinct_spatial_weights = distinct_spatial_weights

    def build(self, features_shape):
        channels, gate_units = features_shape[-1], 4 * self.units
        spatial_columns = gate_units * (self.neighbourhood if self.distinct_spatial_weights else 1)
        self.spatial_kernel = self._weight("spatial_kernel", (channels, spatial_columns))
        self.spatial_bias = self._weight("spatial_bias", (spatial_columns,), "zeros")
        self.depth_kernel = self._weight("depth_kernel", (channels, gate_units))
        self.depth_bias = self._weight("depth_bias", (gate_units,), "zeros")

    def call(self, features):
        spatial_gates = keras.ops.matmul(features, self.spatial_kernel) + self.spatial_bias
        shape = keras.ops.shape(features)
        directions = self.neighbourhood if self.distinct_spatial_weights else 1
        spatial_gates = keras.ops.reshape(spatial_gates, (shape[0], shape[1], shape[2], directions, 4 * self.units))
        spatial_hidden, spatial_memory = _lstm_update(spatial_gates, None, self.hidden_form)
        if not self.distinct_spatial_weights:  # k identical LSTMs: one computation, k copies
            target = (shape[0], shape[1], shape[2], self.neighbourhood, self.units)
            spatial_hidden = keras.ops.broadcast_to(spatial_hidden, target)
            spatial_memory = keras.ops.broadcast_to(spatial_memory, target)
        depth_gates = keras.ops.matmul(features, self.depth_kernel) + self.depth_bias
        depth_hidden, depth_memory = _lstm_update(depth_gates, None, self.hidden_form)
        return self._outputs(spatial_hidden, spatial_memory, depth_hidden, depth_memory)

    def get_config(self):
        return {**super().get_config(), "distinct_spatial_weights": self.distinct_spatial_weights}


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class LGLSTMLayer(_LocalGlobalBase):
    """One Local-Global LSTM layer (paper §3.2.2, eq. 3-4).

    Call it on [H, spatial memory, depth memory] (as a TransitionLayer or a previous LGLSTMLayer returns
    them); it returns the same three for the next layer. Calling one instance several times shares its
    weights across layers, as the paper does (§1); use one instance per layer for per-layer weights.

    Args:
        units: hidden cells d per LSTM (64 in the paper).
        neighbourhood: 8, 4 ("local 4") or 2 ("local 2") neighbours.
        use_global: include the global hidden cells f in H (False: "w/o global").
        hidden_form: "grid" (h = tanh(o * m)) or "standard" (h = o * tanh(m)).
        kernel_initializer: "lstm_uniform" (uniform [-0.1, 0.1], §4.1) or a Keras initializer.

    Example:
    ```python
    state, spatial_memory, depth_memory = TransitionLayer(64)(keras.Input((41, 41, 1024)))
    layer = LGLSTMLayer(64)
    for _ in range(5):
        state, spatial_memory, depth_memory = layer([state, spatial_memory, depth_memory])
    ```
    """

    def build(self, input_shape):
        state_channels, gate_units = input_shape[0][-1], 4 * self.units
        expected = input_state_channels(self.units, self.neighbourhood, self.use_global)
        if state_channels != expected:
            raise ValueError(
                f"LGLSTMLayer input state has {state_channels} channels, expected {expected} "
                f"((9 * use_global + neighbourhood + 1) * units)"
            )
        self.spatial_kernel = self._weight("spatial_kernel", (state_channels, gate_units))
        self.spatial_bias = self._weight("spatial_bias", (gate_units,), "zeros")
        self.depth_kernel = self._weight("depth_kernel", (state_channels, gate_units))
        self.depth_bias = self._weight("depth_bias", (gate_units,), "zeros")

    def call(self, inputs):
        state, spatial_memory, depth_memory = inputs
        # One product for the shared spatial gates and the depth gates together.
        kernel = keras.ops.concatenate([self.spatial_kernel, self.depth_kernel], axis=-1)
        bias = keras.ops.concatenate([self.spatial_bias, self.depth_bias], axis=-1)
        spatial_gates, depth_gates = keras.ops.split(keras.ops.matmul(state, kernel) + bias, 2, axis=-1)
        # The same gates for every direction, broadcast over the k memories.
        spatial_hidden, spatial_memory = _lstm_update(spatial_gates[..., None, :], spatial_memory, self.hidden_form)
        depth_hidden, depth_memory = _lstm_update(depth_gates, depth_memory, self.hidden_form)
        return self._outputs(spatial_hidden, spatial_memory, depth_hidden, depth_memory)
