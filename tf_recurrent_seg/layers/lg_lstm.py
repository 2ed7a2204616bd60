"""Local-Global LSTM layers for semantic object parsing (LG-LSTM paper §3).

At every position j an LG-LSTM layer reads the input state
    H_j = [f (9d, global) ; h^s_{j,1..k} (hidden cells sent by the k neighbours) ; h^e_j (own depth hidden)]
and runs k spatial LSTMs (one shared weight matrix, one memory each) and one depth LSTM on it. The new
hidden cells are assembled into the next layer's H: the slot of neighbour n at j holds the hidden cell
that spatial LSTM n computed at position j + offset_n, and f is a max over a 3x3 grid of the depth hidden
map. The transition layer makes the first H from convolutional features.

Because the k spatial LSTMs read the same H_j with the same weights, their gates are identical: they are
computed once per position (one matmul together with the depth LSTM's) and applied to the k memories.
Neighbours are gathered by one depthwise convolution whose 3x3 kernels are one-hot at each direction's offset
(`neighbour_gather="depthwise_conv"`, the default), by shifting the hidden maps with zero padding (`"shift"`:
pad + slice per direction) or from one `tf.image.extract_patches` call (`"extract_patches"`: 3x3 patches of all
k maps, 9x the data); all three give the same numbers (docs/decisions.md#neighbour-gather, benchmarks/lg_lstm.py
times them).
"""

import keras
import numpy as np
import tensorflow as tf

# Offsets (dy, dx) from the receiving position to each neighbour, in slot order (docs/equations.md#lg-lstm-input-state).
NEIGHBOURHOODS = {
    8: ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)),
    4: ((-1, -1), (-1, 0), (-1, 1), (0, -1)),  # the paper's "local 4": top-left, top, top-right, left
    2: ((-1, 0), (0, -1)),  # "local 2": top, left
}
HIDDEN_FORMS = ("grid", "standard")  # tanh(o * m') (Grid LSTM, docs/decisions.md#lg-lstm-hidden-form), or o * tanh(m')
NEIGHBOUR_GATHERS = ("depthwise_conv", "shift", "extract_patches")  # docs/decisions.md#neighbour-gather
GRID_CELLS = 3  # the global hidden cells come from a 3x3 grid (§3.2.2)


def _check_options(neighbourhood: int, hidden_form: str, neighbour_gather: str) -> None:
    if neighbourhood not in NEIGHBOURHOODS:
        raise ValueError(f"neighbourhood must be one of {sorted(NEIGHBOURHOODS)}, got {neighbourhood!r}")
    if hidden_form not in HIDDEN_FORMS:
        raise ValueError(f"hidden_form must be one of {HIDDEN_FORMS}, got {hidden_form!r}")
    if neighbour_gather not in NEIGHBOUR_GATHERS:
        raise ValueError(f"neighbour_gather must be one of {NEIGHBOUR_GATHERS}, got {neighbour_gather!r}")


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

    def compute_output_shape(self, input_shape):
        return (input_shape[0], GRID_CELLS * GRID_CELLS * input_shape[-1])


def shift_from_neighbour(hidden_map, offset: tuple[int, int]):
    """result[:, y, x] = hidden_map[:, y + dy, x + dx], zero where that position is outside the map."""
    dy, dx = offset
    padded = keras.ops.pad(hidden_map, [[0, 0], [1, 1], [1, 1], [0, 0]])
    row_stop = -1 + dy if dy < 1 else None
    column_stop = -1 + dx if dx < 1 else None
    return padded[:, 1 + dy : row_stop, 1 + dx : column_stop, :]


def gather_by_shift(spatial_hidden, neighbourhood: int):
    """(B, H, W, k, d) -> (B, H, W, k * d): slot n at (y, x) is direction n's map at (y + dy_n, x + dx_n), else 0."""
    # One unstack, not k slices: the gradient of each slice would write a zero tensor of the full stack.
    directions = keras.ops.unstack(spatial_hidden, neighbourhood, axis=3)
    offsets = NEIGHBOURHOODS[neighbourhood]
    slots = [shift_from_neighbour(direction, offset) for direction, offset in zip(directions, offsets)]
    return keras.ops.concatenate(slots, axis=-1)


def gather_by_patches(spatial_hidden, neighbourhood: int):
    """`gather_by_shift` from one `tf.image.extract_patches` call over the k maps stacked on the channels.

    With a 3x3 window, stride 1 and SAME padding the patch at (y, x) covers rows y - 1 .. y + 1 and columns
    x - 1 .. x + 1, zeros outside the map, channels ordered (patch row, patch column, direction, unit): patch
    position (dy + 1, dx + 1) of direction n holds its map at (y + dy, x + dx), the slot's value.
    """
    shape = keras.ops.shape(spatial_hidden)
    units = spatial_hidden.shape[-1]
    maps = keras.ops.reshape(spatial_hidden, (shape[0], shape[1], shape[2], neighbourhood * units))
    patches = tf.image.extract_patches(
        maps, sizes=[1, 3, 3, 1], strides=[1, 1, 1, 1], rates=[1, 1, 1, 1], padding="SAME"
    )
    patches = keras.ops.reshape(patches, (shape[0], shape[1], shape[2], 9 * neighbourhood, units))
    indices = [(3 * (dy + 1) + dx + 1) * neighbourhood + n for n, (dy, dx) in enumerate(NEIGHBOURHOODS[neighbourhood])]
    slots = keras.ops.take(patches, indices, axis=3)
    return keras.ops.reshape(slots, (shape[0], shape[1], shape[2], neighbourhood * units))


def gather_by_depthwise_conv(spatial_hidden, neighbourhood: int):
    """`gather_by_shift` as one depthwise convolution over the k maps stacked on the channels.

    Channel (n, u) has a 3x3 kernel that is 1 at (dy_n + 1, dx_n + 1) and 0 elsewhere, so with SAME zero padding
    its output at (y, x) is direction n's map at (y + dy_n, x + dx_n): the value plus exact zeros, bit for bit the
    shifted one. Forward and backward are one op each (the kernel is a constant), where shifting takes k pads and
    slices and their gradients.
    """
    shape = keras.ops.shape(spatial_hidden)
    units = spatial_hidden.shape[-1]
    maps = keras.ops.reshape(spatial_hidden, (shape[0], shape[1], shape[2], neighbourhood * units))
    kernel = np.zeros((3, 3, neighbourhood, units, 1), np.float32)
    for n, (dy, dx) in enumerate(NEIGHBOURHOODS[neighbourhood]):
        kernel[dy + 1, dx + 1, n] = 1.0
    kernel = keras.ops.convert_to_tensor(kernel.reshape(3, 3, neighbourhood * units, 1), dtype=maps.dtype)
    return keras.ops.depthwise_conv(maps, kernel, strides=1, padding="same")


# The function behind each `neighbour_gather` option.
GATHERS = {"depthwise_conv": gather_by_depthwise_conv, "shift": gather_by_shift, "extract_patches": gather_by_patches}


def assemble_input_state(
    spatial_hidden, depth_hidden, neighbourhood: int, use_global: bool, neighbour_gather: str = "depthwise_conv"
):
    """Builds H = [f ; neighbour slots ; own depth hidden] from (B, H, W, k, d) and (B, H, W, d) hidden maps."""
    parts = [GATHERS[neighbour_gather](spatial_hidden, neighbourhood), depth_hidden]
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
    """Gate order [input, forget, output, candidate]; returns (hidden, memory). Broadcasts gates over memory.

    The update runs in float32 whatever the gates' dtype (mixed precision): the memory is returned in float32,
    the hidden cells in the gates' dtype. Under float32 the casts are no-ops."""
    compute_dtype = keras.backend.standardize_dtype(gates.dtype)
    gates = keras.ops.cast(gates, "float32")
    input_gate, forget_gate, output_gate, candidate = keras.ops.split(gates, 4, axis=-1)
    memory = keras.ops.sigmoid(input_gate) * keras.ops.tanh(candidate) + (
        0.0 if memory is None else keras.ops.sigmoid(forget_gate) * keras.ops.cast(memory, "float32")
    )
    output_gate = keras.ops.sigmoid(output_gate)
    if hidden_form == "grid":
        return keras.ops.cast(keras.ops.tanh(output_gate * memory), compute_dtype), memory
    return keras.ops.cast(output_gate * keras.ops.tanh(memory), compute_dtype), memory


class _LocalGlobalBase(keras.layers.Layer):
    """Options shared by the transition and LG-LSTM layers."""

    def __init__(
        self,
        units: int,
        neighbourhood: int = 8,
        use_global: bool = True,
        hidden_form: str = "grid",
        neighbour_gather: str = "depthwise_conv",
        kernel_initializer="lstm_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_options(neighbourhood, hidden_form, neighbour_gather)
        self.units = units
        self.neighbourhood = neighbourhood
        self.use_global = use_global
        self.hidden_form = hidden_form
        self.neighbour_gather = neighbour_gather
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
        state = assemble_input_state(
            spatial_hidden, depth_hidden, self.neighbourhood, self.use_global, self.neighbour_gather
        )
        return [state, spatial_memory, depth_memory]

    def _output_shapes(self, batch, height, width):
        """[H, spatial memory, depth memory] shapes at a (batch, height, width) position grid."""
        return [
            (batch, height, width, input_state_channels(self.units, self.neighbourhood, self.use_global)),
            (batch, height, width, self.neighbourhood, self.units),
            (batch, height, width, self.units),
        ]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "neighbourhood": self.neighbourhood,
            "use_global": self.use_global,
            "hidden_form": self.hidden_form,
            "neighbour_gather": self.neighbour_gather,
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
        neighbour_gather: "depthwise_conv" (one convolution with one-hot kernels), "shift" (pad + slice each
            direction's map) or "extract_patches" (one `tf.image.extract_patches` call); the same numbers
            (docs/decisions.md#neighbour-gather).
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

    def compute_output_shape(self, features_shape):
        return self._output_shapes(*features_shape[:3])

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
        neighbour_gather: "depthwise_conv", "shift" or "extract_patches" (docs/decisions.md#neighbour-gather).
        kernel_initializer: "lstm_uniform" (uniform [-0.1, 0.1], §4.1) or a Keras initializer.

    Example:
    ```python
    state, spatial_memory, depth_memory = TransitionLayer(64)(keras.Input((41, 41, 1024)))
    layer = LGLSTMLayer(64)
    for _ in range(5):
        state, spatial_memory, depth_memory = layer([state, spatial_memory, depth_memory])
    ```
    """

    @property
    def input_dtype(self):
        # Keras casts every floating input to this dtype, the memories included: float32 (a lossless widening of
        # 16-bit values) keeps them float32 under a mixed policy; `call` narrows H to the compute dtype itself.
        return "float32"

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
        state = keras.ops.cast(state, self.compute_dtype)
        # One product for the shared spatial gates and the depth gates together.
        kernel = keras.ops.concatenate([self.spatial_kernel, self.depth_kernel], axis=-1)
        bias = keras.ops.concatenate([self.spatial_bias, self.depth_bias], axis=-1)
        spatial_gates, depth_gates = keras.ops.split(keras.ops.matmul(state, kernel) + bias, 2, axis=-1)
        # The same gates for every direction, broadcast over the k memories.
        spatial_hidden, spatial_memory = _lstm_update(spatial_gates[..., None, :], spatial_memory, self.hidden_form)
        depth_hidden, depth_memory = _lstm_update(depth_gates, depth_memory, self.hidden_form)
        return self._outputs(spatial_hidden, spatial_memory, depth_hidden, depth_memory)

    def compute_output_shape(self, input_shape):
        return self._output_shapes(*input_shape[0][:3])
