"""The 8-channel spatial coordinate map of the RMI paper (§3.2) and the reference code."""

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
