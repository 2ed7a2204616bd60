"""TensorBoard scalars and images written without the `tensorboard` package.

`tf.summary.scalar` / `tf.summary.image` live in `tensorboard`, which TF 2.21 no longer installs. These write the
same records (plugin "scalars" / "images") through core `tf.summary.write`, so TensorBoard reads them and training
does not depend on it.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.core.framework import summary_pb2


def _summary_metadata(plugin: str, data_class: int):
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin), data_class=data_class
    )


def scalar_summary(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar (the default writer's)."""
    tf.summary.write(
        name,
        tf.constant(float(value), tf.float32),
        step=step,
        metadata=_summary_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR),
    )


def image_summary(name: str, images: tf.Tensor, step: int, max_outputs: int = 3) -> None:
    """A TensorBoard image summary of (B, H, W, C) floats in [0, 1] (C = 1 or 3)."""
    images = tf.convert_to_tensor(images)[:max_outputs]
    encoded = [tf.io.encode_png(tf.image.convert_image_dtype(image, tf.uint8, saturate=True)) for image in images]
    shape = tf.shape(images)
    tensor = tf.stack([tf.as_string(shape[2]), tf.as_string(shape[1])] + encoded)  # width, height, PNGs
    metadata = _summary_metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE)
    tf.summary.write(name, tensor, step=step, metadata=metadata)
