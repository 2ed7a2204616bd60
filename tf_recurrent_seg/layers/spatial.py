"""The 8-channel spatial coordinate map of the RMI paper (§3.2) and the reference code; Caffe's ceil-mode max
pooling (Co-CNN)."""

import math

import keras
import numpy as np


def spatial_coordinates(height: int, width: int) -> np.ndarray:
    """Returns the (height, width, 8) float32 coordinate map.

    For the cell at row h, column w: xmin = 2w/W - 1, xmax = 2(w+1)/W - 1, xctr = (xmin + xmax)/2, and
    likewise for y; channels are [xmin, ymin, xmax, ymax, xctr, yctr, 1/W, 1/H] (docs/equations.md#spatial-coordinates).
    Computed in float64 and stored as float32, as the reference code does.
    """
    xmin = 2.0 * np.arange(width) / width - 1.0
    xmax = 2.0 * (np.arange(width) + 1) / width - 1.0
    ymin = 2.0 * np.arange(height) / height - 1.0
    ymax = 2.0 * (np.arange(height) + 1) / height - 1.0
    x_channels = np.stack([xmin, xmax, (xmin + xmax) / 2], axis=-1)  # (W, 3)
    y_channels = np.stack([ymin, ymax, (ymin + ymax) / 2], axis=-1)  # (H, 3)
    grid = np.empty((height, width, 8), dtype=np.float64)
    grid[..., [0, 2, 4]] = x_channels[None, :, :]
    grid[..., [1, 3, 5]] = y_channels[:, None, :]
    grid[..., 6] = 1.0 / width
    grid[..., 7] = 1.0 / height
    return grid.astype(np.float32)


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class SpatialCoordinates(keras.layers.Layer):
    """Produces the 8-channel spatial coordinate map matching a feature map's height and width.

    The map depends only on the static spatial size of the input, so it is a constant broadcast over the
    batch; the input's values are not read.

    Example:
    ```python
    features = keras.Input((40, 40, 1000))
    coordinates = SpatialCoordinates()(features)  # (None, 40, 40, 8)
    ```
    """

    def call(self, feature_map):
        height, width = feature_map.shape[1], feature_map.shape[2]
        if height is None or width is None:
            raise ValueError(
                f"SpatialCoordinates needs a static height and width, got feature map shape {feature_map.shape}"
            )
        grid = keras.ops.convert_to_tensor(spatial_coordinates(height, width), dtype=self.compute_dtype)
        batch_size = keras.ops.shape(feature_map)[0]
        return keras.ops.broadcast_to(grid[None], (batch_size, height, width, 8))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], input_shape[2], 8)


def ceil_mode_pooled_size(size: int | None, pool_size: int, strides: int) -> int | None:
    """Caffe's pooled size without padding: ceil((size - pool_size) / strides) + 1 (None stays None)."""
    if size is None:
        return None
    return math.ceil((size - pool_size) / strides) + 1


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class CeilModeMaxPool2D(keras.layers.Layer):
    """Max pooling of a (B, H, W, C) map with Caffe's output size: out = ceil((in - pool_size) / strides) + 1.

    Keras' "valid" pooling rounds down and "same" pads both sides; Caffe (no padding) rounds up, so the last
    window may hang over the bottom / right edge and takes the max of the pixels it covers. Done as padding the
    bottom and right with -inf by (out - 1) * strides + pool_size - in, then a "valid" pool: every window starts
    inside the map, so the padding never wins and gets no gradient. 150 x 100 pools (3, 2) to 75 x 50, 37 x 25,
    18 x 12 (Co-CNN). Needs a static height and width.

    Args:
        pool_size: the square window's side.
        strides: the step in both directions.

    Example:
    ```python
    pooled = CeilModeMaxPool2D(3, 2)(keras.Input((75, 50, 192)))  # (None, 37, 25, 192)
    ```
    """

    def __init__(self, pool_size: int = 3, strides: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.strides = strides

    def _padding(self, size: int) -> int:
        pooled = ceil_mode_pooled_size(size, self.pool_size, self.strides)
        if pooled < 1:
            raise ValueError(f"CeilModeMaxPool2D({self.pool_size}, {self.strides}) needs sides >= 2, got {size}")
        return (pooled - 1) * self.strides + self.pool_size - size

    def call(self, inputs):
        height, width = inputs.shape[1], inputs.shape[2]
        if height is None or width is None:
            raise ValueError(f"CeilModeMaxPool2D needs a static height and width, got shape {inputs.shape}")
        paddings = [[0, 0], [0, self._padding(height)], [0, self._padding(width)], [0, 0]]
        padded = keras.ops.pad(inputs, paddings, constant_values=-np.inf)
        return keras.ops.max_pool(padded, self.pool_size, self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        height, width = (ceil_mode_pooled_size(side, self.pool_size, self.strides) for side in input_shape[1:3])
        return (input_shape[0], height, width, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides}
