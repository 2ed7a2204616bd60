"""Layers between sequences and their elements: the last step of a recurrence, a stack of per-layer predictions."""

import keras


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class LastStep(keras.layers.Layer):
    """Selects the last step of a (B, T, ...) sequence.

    Example:
    ```python
    last = LastStep()(keras.ops.ones((2, 5, 8, 8, 3)))  # (2, 8, 8, 3)
    ```
    """

    def call(self, sequence):
        return sequence[:, -1]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *input_shape[2:])


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class StackPredictions(keras.layers.Layer):
    """Stacks N (B, H, W, C) maps into (B, N, H, W, C): every deeply supervised prediction of a parsing model.

    Example:
    ```python
    stacked = StackPredictions()([keras.ops.ones((2, 8, 8, 5))] * 3)  # (2, 3, 8, 8, 5)
    ```
    """

    def call(self, predictions):
        return keras.ops.stack(predictions, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], len(input_shape), *input_shape[0][1:])
