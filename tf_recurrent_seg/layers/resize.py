"""Bilinear resizing under the two coordinate conventions that matter for reproducing numbers."""

import tensorflow as tf

RESIZE_CONVENTIONS = ("half_pixel", "reference")


def resize_bilinear(images: tf.Tensor, size: tuple[int, int], convention: str) -> tf.Tensor:
    """Bilinearly resizes a (B, H, W, C) batch to `size` = (height, width).

    Args:
        images: float tensor of shape (B, H, W, C).
        size: output (height, width).
        convention: 'half_pixel' samples output pixel i at input coordinate (i + 0.5) * in/out - 0.5
            (`tf.image.resize`); 'reference' samples it at i * in/out, as TF1's `resize_bilinear`
            with align_corners=False did in the authors' code (docs/reference_conventions.md#resize-convention).
    """
    if convention == "half_pixel":
        return tf.image.resize(images, size, method="bilinear")
    if convention == "reference":
        return tf.compat.v1.image.resize_bilinear(images, size, align_corners=False, half_pixel_centers=False)
    raise ValueError(f"resize convention must be one of {RESIZE_CONVENTIONS}, got {convention!r}")
