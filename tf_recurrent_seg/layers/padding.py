"""Handling of left-padded token sequences (`<pad>` = 0 in front, docs/reference_conventions.md#padding)."""

import keras


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class TrimLeadingPadding(keras.layers.Layer):
    """Drops the leading columns that are `<pad>` (0) for every sequence in the batch.

    Tokens are left-padded, so the recurrent layers need to run only as many steps as the longest real
    expression of the batch. One column always remains (an all-pad batch runs a single masked step, which
    leaves the states at zero), so the output is never empty.

    Example:
    ```python
    trimmed = TrimLeadingPadding()(keras.ops.convert_to_tensor([[0, 0, 5, 7], [0, 4, 2, 9]]))
    # [[0, 5, 7], [4, 2, 9]]
    ```
    """

    def call(self, tokens):
        num_columns = keras.ops.shape(tokens)[1]
        column_has_word = keras.ops.any(keras.ops.not_equal(tokens, 0), axis=0)
        first_word = keras.ops.argmax(keras.ops.cast(column_has_word, "int32"))  # 0 when no column has a word
        first_word = keras.ops.where(keras.ops.any(column_has_word), first_word, num_columns - 1)
        return tokens[:, first_word:]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None)


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class PaddingMask(keras.layers.Layer):
    """Boolean (B, T) mask, True where the token is a word and False on `<pad>` (0).

    Example:
    ```python
    mask = PaddingMask()(keras.Input((20,), dtype="int32"))
    ```
    """

    def call(self, tokens):
        return keras.ops.not_equal(tokens, 0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, tokens):
        return keras.KerasTensor(self.compute_output_shape(tokens.shape), dtype="bool")


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class LeftPadSteps(keras.layers.Layer):
    """Pads a (B, T', ...) sequence with zeros in front up to `length` steps.

    Restores per-word outputs computed on trimmed tokens to the positions of the original (B, length)
    tokens; a zero mLSTM state is exactly the state before the first word.

    Args:
        length: number of steps of the output.

    Example:
    ```python
    padded = LeftPadSteps(20)(keras.Input((None, 40, 40, 500)))  # (None, 20, 40, 40, 500)
    ```
    """

    def __init__(self, length: int, **kwargs):
        super().__init__(**kwargs)
        self.length = length

    def call(self, sequence):
        missing = self.length - keras.ops.shape(sequence)[1]
        paddings = [[0, 0], [missing, 0]] + [[0, 0]] * (len(sequence.shape) - 2)
        padded = keras.ops.pad(sequence, paddings)
        return keras.ops.reshape(padded, (-1, self.length, *sequence.shape[2:]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.length, *input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "length": self.length}
