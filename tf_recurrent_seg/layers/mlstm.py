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

    States are `[h, c, visual_gates]`: the hidden and memory maps (B, H, W, units) and the per-image
    visual term (B, H, W, 4 * units), which `get_initial_state(visual_features)` computes once and every
    step passes on unchanged. The step input is (B, word_channels + 1): the word-level vector ([w_t; h_t]
    in RMI) followed by a word flag, 1 for a word and 0 for a `<pad>` step, which leaves h and c unchanged
    (the reference code skips such steps). The cell applies the flag itself, broadcast over the map:
    Keras's RNN masking would tile the mask to every state's full shape on every step, which costs a
    tenth of the layer's time at paper size. Gates follow TF1 BasicLSTMCell: columns (i, j, f, o), a constant
    `forget_bias` added to f, c' = sigmoid(f + forget_bias) * c + sigmoid(i) * tanh(j), h' = sigmoid(o) * tanh(c').

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
    step_input = keras.ops.concatenate([keras.random.normal((2, 6)), keras.ops.ones((2, 1))], axis=-1)
    output, states = cell(step_input, states)  # output: (2, 5, 5, 8)
    ```
    """

    def __init__(self, units: int, forget_bias: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.forget_bias = forget_bias
        # Keras RNN reads these; the map-shaped sizes are handled by ConvMultimodalLSTM.
        self.state_size = [units, units, 4 * units]
        self.output_size = units

    def build(self, step_input_shape, visual_features_shape=None):
        if visual_features_shape is None:
            raise ValueError("ConvMultimodalLSTMCell.build needs visual_features_shape (B, H, W, C)")
        word_channels = step_input_shape[-1] - 1  # the last channel is the word flag
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
        """The once-per-image term W_v · [v; s] + b, shape (B, H, W, 4u), with the forget-bias constant
        already added to the f block so no step has to add it again."""
        forget_bias = keras.ops.concatenate(
            [
                keras.ops.zeros((2 * self.units,)),
                keras.ops.full((self.units,), self.forget_bias),
                keras.ops.zeros((self.units,)),
            ]
        )
        return keras.ops.matmul(visual_features, self.visual_kernel) + (self.bias + forget_bias)

    def get_initial_state(self, visual_features, word_channels: int | None = None):
        """Zero h and c and the visual term for `visual_features` (B, H, W, visual_channels)."""
        if not self.built:
            self.build((None, word_channels + 1), visual_features.shape)
        gates = self.visual_gates(visual_features)
        zeros = keras.ops.zeros_like(gates[..., : self.units])
        return [zeros, zeros, gates]

    def call(self, step_input, states):
        previous_hidden, previous_memory, visual_gates = states
        word_features, is_word = step_input[:, :-1], step_input[:, -1] > 0
        hidden, memory = previous_hidden, previous_memory
        word_gates = keras.ops.matmul(word_features, self.word_kernel)  # once per step per image
        recurrent_gates = keras.ops.matmul(hidden, self.recurrent_kernel)  # the only per-pixel product
        gates = recurrent_gates + (visual_gates + word_gates[:, None, None, :])
        input_gate, candidate, forget_gate, output_gate = keras.ops.split(gates, 4, axis=-1)
        # forget_bias is already inside visual_gates.
        memory = keras.ops.sigmoid(forget_gate) * memory + keras.ops.sigmoid(input_gate) * keras.ops.tanh(candidate)
        hidden = keras.ops.sigmoid(output_gate) * keras.ops.tanh(memory)
        is_word = is_word[:, None, None, None]
        hidden = keras.ops.where(is_word, hidden, previous_hidden)
        memory = keras.ops.where(is_word, memory, previous_memory)
        return hidden, [hidden, memory, visual_gates]

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
        cell = ConvMultimodalLSTMCell(units, forget_bias=forget_bias, name="cell")
        super().__init__(cell, return_sequences=return_sequences, unroll=unroll, **kwargs)
        self.units = units
        self.forget_bias = forget_bias

    def build(self, sequences_shape, visual_features_shape=None):
        if visual_features_shape is None or len(visual_features_shape) != 4:
            raise ValueError(f"visual_features must be (B, H, W, C), got shape {visual_features_shape}")
        if len(sequences_shape) != 3:
            raise ValueError(f"word features must be (B, T, C), got shape {sequences_shape}")
        step_input_shape = (sequences_shape[0], sequences_shape[2] + 1)  # + the word flag
        self.cell.build(step_input_shape, visual_features_shape)
        super().build((*sequences_shape[:2], sequences_shape[2] + 1))

    def call(self, sequences, visual_features, mask=None, training=False):
        initial_state = self.cell.get_initial_state(visual_features)
        if mask is None:
            mask = keras.ops.ones(keras.ops.shape(sequences)[:2], dtype="bool")
        word_flag = keras.ops.cast(mask, sequences.dtype)[..., None]
        step_inputs = keras.ops.concatenate([sequences, word_flag], axis=-1)
        # The cell applies the word flag; Keras's own masking is not used (see the cell's docstring).
        return super().call(step_inputs, initial_state=initial_state, mask=None, training=training)

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
