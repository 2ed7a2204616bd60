"""Small element-wise building blocks of the RMI and LSTM-baseline heads."""

import keras

from tf_recurrent_seg.image_ops import RESIZE_CONVENTIONS, resize_bilinear


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class L2Normalize(keras.layers.Layer):
    """L2-normalises over the last axis as x * rsqrt(max(sum(x^2), epsilon)).

    This is `tf.nn.l2_normalize`, which the reference code uses: the epsilon bounds the squared norm.
    (`keras.layers.UnitNormalization` caps the inverse norm at 1/epsilon instead, which differs for
    near-zero vectors.)

    Args:
        epsilon: lower bound on the squared norm.

    Example:
    ```python
    normalized = L2Normalize()(keras.Input((40, 40, 1000)))
    ```
    """

    def __init__(self, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.supports_masking = True

    def call(self, inputs):
        square_sum = keras.ops.sum(keras.ops.square(inputs), axis=-1, keepdims=True)
        return inputs * keras.ops.rsqrt(keras.ops.maximum(square_sum, self.epsilon))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class BoundedAtanh(keras.layers.Layer):
    """The reference head's finite atanh: 0.5 * (log(1 + eps + h) - log(1 + eps - h)).

    The mLSTM hidden state lies in (-1, 1); the epsilon keeps the logarithms finite at the ends.

    Args:
        epsilon: added inside both logarithms (1e-3 in the reference code).

    Example:
    ```python
    response = BoundedAtanh()(keras.Input((40, 40, 500)))
    ```
    """

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        one = 1.0 + self.epsilon
        return 0.5 * (keras.ops.log(one + inputs) - keras.ops.log(one - inputs))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class ChannelMean(keras.layers.Layer):
    """Mean over the last (channel) axis, keeping it as size 1: the paper's Figure 6 response map.

    Example:
    ```python
    response_map = ChannelMean()(keras.Input((40, 40, 500)))  # (None, 40, 40, 1)
    ```
    """

    def call(self, inputs):
        return keras.ops.mean(inputs, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class BilinearResize(keras.layers.Layer):
    """Bilinear resize of a (B, H, W, C) map to a fixed size under a chosen coordinate convention.

    Args:
        height: output height.
        width: output width.
        convention: 'half_pixel' (`tf.image.resize`) or 'reference' (TF1 `resize_bilinear` without
            half-pixel centres, as the authors' code; needed to reproduce imported checkpoints).

    Example:
    ```python
    logits = BilinearResize(320, 320, "reference")(keras.Input((40, 40, 1)))
    ```
    """

    def __init__(self, height: int, width: int, convention: str = "half_pixel", **kwargs):
        super().__init__(**kwargs)
        if convention not in RESIZE_CONVENTIONS:
            raise ValueError(f"convention must be one of {RESIZE_CONVENTIONS}, got {convention!r}")
        self.height = height
        self.width = width
        self.convention = convention

    def call(self, inputs):
        return resize_bilinear(inputs, (self.height, self.width), self.convention)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width, "convention": self.convention}


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class TileToMap(keras.layers.Layer):
    """Tiles a (B, C) vector over the height and width of a (B, H, W, *) reference map.

    Example:
    ```python
    tiled = TileToMap()(keras.Input((1000,)), keras.Input((40, 40, 8)))  # (None, 40, 40, 1000)
    ```
    """

    def call(self, vectors, reference_map):
        shape = keras.ops.shape(reference_map)
        return keras.ops.broadcast_to(vectors[:, None, None, :], (shape[0], shape[1], shape[2], vectors.shape[-1]))

    def compute_output_shape(self, vectors_shape, reference_map_shape):
        return (vectors_shape[0], reference_map_shape[1], reference_map_shape[2], vectors_shape[-1])
