"""The convolutional multimodal LSTM (mLSTM) of RMI (paper §3.3), with factorized gates.

The paper's gate pre-activation at pixel (i, j) and word t is W · [v_ij; w_t; h_t; s_ij; h_prev_ij] + b,
a 1x1 convolution over a 3008 + 500 channel input. Splitting W into row blocks gives the same numbers
with far less work:
- visual term   W_v · [v_ij; s_ij] + b   depends only on the image: computed once per image;
- word term     W_w · [w_t; h_t]         is the same at every pixel: computed once per step per image;
- recurrent term W_h · h_prev_ij         is the only per-pixel, per-step matrix product.
At paper size that cuts each step from 1600 x 3508 x 2000 to 1600 x 500 x 2000 multiply-adds.
"""

import math

import keras

# TF1 BasicLSTMCell gate order of the reference code's kernel columns: input, candidate (j), forget, output.
GATE_ORDER = ("input", "candidate", "forget", "output")


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class ConvMultimodalLSTMCell(keras.layers.Layer):
    """One step of the 1x1 convolutional multimodal LSTM over a (H, W) grid, gates factorized.

    States are `[h, c, v_i, v_j, v_f, v_o]`: the hidden and memory maps and the per-image visual term of each
    gate, all held channels first, (units, B, H, W); `get_initial_state(visual_features)` computes the visual
    terms once and every step passes them on unchanged. Channels first, each gate's per-pixel product is
    K_g^T h on (units, B * H * W), one contiguous block; channels last, the gates' interleaved columns moved
    every gate value through strided copies, which took more time than the product itself. One product per
    gate, rather than one product split four ways, spares the split's gradient, a copy of every gate value
    per step (docs/decisions.md#mlstm-state-layout). `ConvMultimodalLSTM` converts to and from (B, H, W, C).

    The step input is (B, 4u + 1): that step's word term W_w · [w_t; h_t] (`word_gates`; the layer computes
    it for every step in one product before the loop, since per step the product would read the whole word
    kernel and its gradient write a kernel-sized outer product), then a word flag, 1 for a word and 0 for a
    `<pad>` step, which leaves h and c unchanged (the reference code skips such steps). The cell applies the
    flag itself, broadcast over the map: Keras's RNN masking would tile the mask to every state's full shape
    on every step. Gates follow TF1 BasicLSTMCell: columns (i, j, f, o), a constant `forget_bias` added to f,
    c' = sigmoid(f + forget_bias) * c + sigmoid(i) * tanh(j), h' = sigmoid(o) * tanh(c').
    Under a mixed dtype policy the matrix products run in the compute dtype; the states (h, c, the visual
    term), the gate update and the output stay float32 (docs/training.md#mixed-precision-and-xla).

    Weights: `visual_kernel` (visual_channels, 4u), `word_kernel` (word_channels, 4u),
    `recurrent_kernel` (u, 4u), `bias` (4u). Stacked as [visual; word; recurrent] rows they are the
    concatenated form's kernel (with the reference's row order permuted, see `convert_tf1`).

    Args:
        units: hidden channels u of the mLSTM (500 in the paper).
        forget_bias: constant added to the forget gate before its sigmoid (1.0 in TF1's cell).

    Example:
    ```python
    cell = ConvMultimodalLSTMCell(units=8)
    visual = keras.random.normal((2, 5, 5, 12))
    states = cell.get_initial_state(visual_features=visual, word_channels=6)
    word_gates = cell.word_gates(keras.random.normal((2, 6)))  # (2, 32)
    step_input = keras.ops.concatenate([word_gates, keras.ops.ones((2, 1))], axis=-1)
    output, states = cell(step_input, states)  # output: (8, 2, 5, 5), channels first
    ```
    """

    def __init__(self, units: int, forget_bias: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.forget_bias = forget_bias
        # Keras RNN reads these; the map-shaped sizes are handled by ConvMultimodalLSTM.
        self.state_size = [units] * 6  # h, c, then the visual term of each gate
        self.output_size = units

    @property
    def input_dtype(self):
        # Keras casts every floating argument of a call, the states included, to this dtype. float32 (a lossless
        # widening of 16-bit values) keeps the states h, c and the visual term float32 under a mixed policy; `call`
        # narrows the matmul operands to the compute dtype itself. Under float32 nothing changes.
        return "float32"

    def build(self, word_features_shape, visual_features_shape=None):
        """Builds the kernels from the word features' (..., word_channels) and the visual features' shapes."""
        if visual_features_shape is None:
            raise ValueError("ConvMultimodalLSTMCell.build needs visual_features_shape (B, H, W, C)")
        word_channels = word_features_shape[-1]
        visual_channels = visual_features_shape[-1]
        gate_units = 4 * self.units
        # The reference initialises the whole concatenated kernel with Glorot uniform; use that kernel's
        # fan-in and fan-out for every block, so the factorized layer starts with the same distribution.
        limit = math.sqrt(6.0 / (visual_channels + word_channels + self.units + gate_units))
        initializer = keras.initializers.RandomUniform(-limit, limit)
        self.visual_kernel = self.add_weight(
            name="visual_kernel", shape=(visual_channels, gate_units), initializer=initializer
        )
        self.word_kernel = self.add_weight(
            name="word_kernel", shape=(word_channels, gate_units), initializer=initializer
        )
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel", shape=(self.units, gate_units), initializer=initializer
        )
        self.bias = self.add_weight(name="bias", shape=(gate_units,), initializer="zeros")

    def visual_gates(self, visual_features):
        """The once-per-image term W_v · [v; s] + b for (B, H, W, C) features: a list of four (u, B, H, W)
        maps, channels first, gates (i, j, f, o), with the forget-bias constant already added to f so no step
        has to add it again."""
        forget_bias = keras.ops.concatenate(
            [
                keras.ops.zeros((2 * self.units,)),
                keras.ops.full((self.units,), self.forget_bias),
                keras.ops.zeros((self.units,)),
            ]
        )
        # float32 under any policy: it is a state of the loop (see `input_dtype`); a no-op cast in float32.
        gates = keras.ops.cast(keras.ops.matmul(visual_features, self.visual_kernel), "float32") + (
            self.bias + forget_bias
        )
        return keras.ops.split(keras.ops.transpose(gates, (3, 0, 1, 2)), 4, axis=0)

    def get_initial_state(self, visual_features, word_channels: int | None = None):
        """Zero h and c and the visual term for `visual_features` (B, H, W, visual_channels), channels first."""
        if not self.built:
            self.build((None, word_channels), visual_features.shape)
        gates = self.visual_gates(visual_features)
        zeros = keras.ops.zeros_like(gates[0])
        return [zeros, zeros, *gates]

    def word_gates(self, word_features):
        """The word term W_w · [w; h] of (..., word_channels) features: (..., 4u), float32 under any policy."""
        word_features = keras.ops.cast(word_features, self.compute_dtype)
        return keras.ops.cast(keras.ops.matmul(word_features, self.word_kernel), "float32")

    def call(self, step_input, states):
        previous_hidden, previous_memory, *visual_gates = states  # (u, B, H, W) each; visual: i, j, f, o
        word_gates, is_word = keras.ops.transpose(step_input[:, :-1]), step_input[:, -1] > 0  # (4u, B), (B,)
        shape, units = keras.ops.shape(previous_hidden), self.units
        # The only per-pixel products: K_g^T h on (u, B * H * W), one per gate, in the compute dtype (the gates,
        # c and h in float32 under a mixed policy; no-op casts in float32). One product per gate rather than
        # one split four ways: the split's gradient would copy every gate value back into one tensor per step.
        hidden = keras.ops.cast(keras.ops.reshape(previous_hidden, (units, -1)), self.compute_dtype)
        kernel = keras.ops.transpose(self.recurrent_kernel)  # (4u, u): gate g is rows g * u to (g + 1) * u
        input_gate, candidate, forget_gate, output_gate = (
            keras.ops.reshape(
                keras.ops.cast(keras.ops.matmul(kernel[g * units : (g + 1) * units], hidden), "float32"), shape
            )
            + (visual_gates[g] + word_gates[g * units : (g + 1) * units, :, None, None])
            for g in range(4)
        )
        # forget_bias is already inside the f visual term.
        memory = keras.ops.sigmoid(forget_gate) * previous_memory + keras.ops.sigmoid(input_gate) * keras.ops.tanh(
            candidate
        )
        hidden = keras.ops.sigmoid(output_gate) * keras.ops.tanh(memory)
        # A pad step keeps h and c. Selecting costs a pass over both maps (and its gradient two), so it runs
        # only when some expression of the batch has a pad at this step (length-grouped batches rarely do).
        flag = is_word[None, :, None, None]
        hidden, memory = keras.ops.cond(
            keras.ops.all(is_word),
            lambda: (hidden, memory),
            lambda: (keras.ops.where(flag, hidden, previous_hidden), keras.ops.where(flag, memory, previous_memory)),
        )
        return hidden, [hidden, memory, *visual_gates]

    def compute_output_shape(self, step_input_shape, states_shape):
        return tuple(states_shape[0]), [tuple(shape) for shape in states_shape]

    def concatenated_kernel(self):
        """The equivalent single (visual + word + units, 4u) kernel of the concatenated form."""
        return keras.ops.concatenate([self.visual_kernel, self.word_kernel, self.recurrent_kernel], axis=0)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "forget_bias": self.forget_bias}


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class ConvMultimodalLSTM(keras.layers.RNN):
    """Runs `ConvMultimodalLSTMCell` over the words of an expression for every pixel of a feature map.

    Call it as `layer(word_features, visual_features=..., mask=...)` with word features (B, T, C_w) (in
    RMI the raw embedding and the L2-normalised language-LSTM state of each word) and visual features
    (B, H, W, C_v) (normalised visual features and the spatial map). A step whose mask is False leaves
    h and c unchanged for that batch element, as the reference code skips `<pad>` steps.

    Args:
        units: hidden channels of the mLSTM.
        forget_bias: constant added to the forget gate (TF1 BasicLSTMCell: 1.0).
        return_sequences: return the hidden map after every step, (B, T, H, W, units), instead of only the
            last one, (B, H, W, units).
        unroll: unroll the time loop (needs a static T); the fixed-step form used for TFLite.

    Example:
    ```python
    layer = ConvMultimodalLSTM(units=8)
    words = keras.random.normal((2, 4, 6))
    visual = keras.random.normal((2, 5, 5, 12))
    mask = keras.ops.convert_to_tensor([[False, True, True, True], [True, True, True, True]])
    hidden = layer(words, visual_features=visual, mask=mask)  # (2, 5, 5, 8)
    ```
    """

    def __init__(
        self,
        units: int,
        forget_bias: float = 1.0,
        return_sequences: bool = False,
        unroll: bool = False,
        **kwargs,
    ):
        kwargs.pop("cell", None)  # from_config passes the cell's config; the cell is rebuilt from units
        # The cell computes in the layer's dtype policy (as keras.layers.LSTM's cell), also when loaded from a file.
        cell = ConvMultimodalLSTMCell(units, forget_bias=forget_bias, name="cell", dtype=kwargs.get("dtype"))
        super().__init__(cell, return_sequences=return_sequences, unroll=unroll, **kwargs)
        self.units = units
        self.forget_bias = forget_bias

    def build(self, sequences_shape, visual_features_shape=None):
        if visual_features_shape is None or len(visual_features_shape) != 4:
            raise ValueError(f"visual_features must be (B, H, W, C), got shape {visual_features_shape}")
        if len(sequences_shape) != 3:
            raise ValueError(f"word features must be (B, T, C), got shape {sequences_shape}")
        self.cell.build(sequences_shape, visual_features_shape)
        super().build((*sequences_shape[:2], 4 * self.units + 1))  # the step input: word term + word flag

    def call(self, sequences, visual_features, mask=None, training=False):
        initial_state = self.cell.get_initial_state(visual_features)
        if mask is None:
            mask = keras.ops.ones(keras.ops.shape(sequences)[:2], dtype="bool")
        word_flag = keras.ops.cast(mask, "float32")[..., None]  # beside the float32 word term
        step_inputs = keras.ops.concatenate([self.cell.word_gates(sequences), word_flag], axis=-1)
        # The cell applies the word flag; Keras's own masking is not used (see the cell's docstring). The loop is
        # RNN.inner_loop, not RNN.call, which would cast the float32 states to a mixed policy's 16-bit compute dtype
        # (nothing else in RNN.call applies here: no stateful run, no dropout masks). h comes out float32.
        last_output, outputs, _ = self.inner_loop(step_inputs, initial_state, mask=None, training=training)
        # Back from the cell's channels-first layout: (u, B, H, W) -> (B, H, W, u), or for every step
        # (u, T, B, H, W) (the loop swaps the stacked outputs' first two axes) -> (B, T, H, W, u).
        if self.return_sequences:
            return keras.ops.transpose(outputs, (2, 1, 3, 4, 0))
        return keras.ops.transpose(last_output, (1, 2, 3, 0))

    def compute_output_shape(self, sequences_shape, visual_features_shape=None):
        map_shape = tuple(visual_features_shape[1:3]) + (self.units,)
        if self.return_sequences:
            return (sequences_shape[0], sequences_shape[1], *map_shape)
        return (sequences_shape[0], *map_shape)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.pop("cell", None)
        config.update({"units": self.units, "forget_bias": self.forget_bias})
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
