"""Co-CNN's parameter-free super-pixel layers ("Human Parsing with Contextualized Convolutional Neural Network",
its local super-pixel context): within-super-pixel smoothing, then cross-super-pixel neighbourhood voting
(docs/cocnn.md, section "Super-pixel layers").

Both read a per-image super-pixel map `segments` (B, H, W) of int32 ids in [0, max_segments). The ids of image b
are offset by b * max_segments so that one segment reduction over the flattened batch computes every image's
means at once. An id that labels no pixel has mean 0 (`tf.math.unsorted_segment_mean` divides by max(count, 1)).
Ids outside [0, max_segments) are a data error: the CPU kernels raise; on a GPU those pixels read 0.
"""

import keras
import tensorflow as tf


def _batch_segment_ids(segments, max_segments: int):
    """(B, H, W) per-image ids -> (B * H * W,) ids unique over the batch: image b's ids offset by b * K."""
    batch = tf.shape(segments)[0]
    offsets = tf.range(batch, dtype=segments.dtype)[:, None, None] * max_segments
    return tf.reshape(segments + offsets, [-1])


def segment_means(maps, segments, max_segments: int):
    """(B, H, W, C) maps and (B, H, W) ids -> (B, K, C): the mean of `maps` over each super-pixel (0 if empty)."""
    ids = _batch_segment_ids(tf.cast(segments, tf.int32), max_segments)
    channels = maps.shape[-1]
    batch = tf.shape(maps)[0]
    means = tf.math.unsorted_segment_mean(tf.reshape(maps, [-1, channels]), ids, batch * max_segments)
    return tf.reshape(means, [batch, max_segments, channels])


def paint_segments(values, segments, max_segments: int):
    """(B, K, C) per-super-pixel values and (B, H, W) ids -> (B, H, W, C): each pixel gets its super-pixel's row."""
    ids = _batch_segment_ids(tf.cast(segments, tf.int32), max_segments)
    channels = values.shape[-1]
    painted = tf.gather(tf.reshape(values, [-1, channels]), ids)
    shape = tf.shape(segments)
    return tf.reshape(painted, [shape[0], shape[1], shape[2], channels])


def _check_max_segments(max_segments: int) -> None:
    if not isinstance(max_segments, int) or max_segments < 1:
        raise ValueError(f"max_segments must be a positive int, got {max_segments!r}")


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class SuperpixelSmoothing(keras.layers.Layer):
    """Within-super-pixel smoothing: every pixel gets the mean of `maps` over its super-pixel (per image).

    out[b, y, x] = mean of maps[b, y', x'] over the pixels (y', x') with segments[b, y', x'] = segments[b, y, x].
    Differentiable w.r.t. `maps` (the gradient of a mean is spread evenly over its pixels); no weights.

    Args:
        max_segments: K, one more than the largest super-pixel id.

    Example:
    ```python
    maps, segments = keras.Input((150, 100, 18)), keras.Input((150, 100), dtype="int32")
    smoothed = SuperpixelSmoothing(512)([maps, segments])  # (None, 150, 100, 18)
    ```
    """

    def __init__(self, max_segments: int, **kwargs):
        super().__init__(**kwargs)
        _check_max_segments(max_segments)
        self.max_segments = max_segments

    def call(self, inputs):
        maps, segments = inputs
        return paint_segments(segment_means(maps, segments, self.max_segments), segments, self.max_segments)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "max_segments": self.max_segments}


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class SuperpixelVoting(keras.layers.Layer):
    """Cross-super-pixel neighbourhood voting: at each pixel of super-pixel s,
    out = (1 - alpha) * m_s + alpha * sum_s' w(s, s') m_s', with m the per-super-pixel means of `smoothed`.

    `neighbour_weights[b, s, s']` is w(s, s') for the neighbours s' of s and 0 elsewhere (the code that computes
    super-pixels gives rows that sum to 1; this layer does not normalise). An empty super-pixel has m = 0.

    Args:
        max_segments: K, one more than the largest super-pixel id; `neighbour_weights` is (B, K, K).
        alpha: the weight of the neighbours' vote against the super-pixel's own mean.

    Example:
    ```python
    smoothed, segments = keras.Input((150, 100, 18)), keras.Input((150, 100), dtype="int32")
    weights = keras.Input((512, 512))
    voted = SuperpixelVoting(512, alpha=0.5)([smoothed, segments, weights])  # (None, 150, 100, 18)
    ```
    """

    def __init__(self, max_segments: int, alpha: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        _check_max_segments(max_segments)
        self.max_segments = max_segments
        self.alpha = alpha

    def call(self, inputs):
        smoothed, segments, neighbour_weights = inputs
        means = segment_means(smoothed, segments, self.max_segments)  # (B, K, C)
        votes = tf.matmul(tf.cast(neighbour_weights, means.dtype), means)  # row s: sum_s' w(s, s') m_s'
        voted = (1.0 - self.alpha) * means + self.alpha * votes
        return paint_segments(voted, segments, self.max_segments)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "max_segments": self.max_segments, "alpha": self.alpha}
