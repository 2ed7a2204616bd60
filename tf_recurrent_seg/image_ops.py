"""Image operations of both tasks, numpy/Pillow and TensorFlow versions side by side.

Placement, resize (images, masks, label maps), padding, resize-and-pad and its inverse, normalisation; which
function does what in each version: docs/decisions.md#image-operations-in-numpy-and-tensorflow. The rules:
docs/reference_conventions.md#image-preprocessing and docs/input_pipeline.md#resize-and-pad. Normalisation: the
means (`NORMALIZATION_MEANS`), the default per task (`REFERRING_NORMALIZATION`, `PARSING_NORMALIZATION`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import PIL
import tensorflow as tf
from PIL import Image

from tf_recurrent_seg.data.records import IGNORE_LABEL

# --- placement ----------------------------------------------------------------------------------------------


def _sides(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) of a target size: S (S x S) or a (height, width) pair (Co-CNN's 150 x 100)."""
    return (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


def resize_placement_np(height: int, width: int, size: int | Sequence[int]) -> tuple[int, int, int, int]:
    """(top, left, new_h, new_w) of `resize_and_pad` for an image of `height` x `width`."""
    out_h, out_w = _sides(size)
    scale = min(out_h / height, out_w / width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    return (out_h - new_h) // 2, (out_w - new_w) // 2, new_h, new_w


def resize_placement(height, width, size: int) -> tf.Tensor:
    """(top, left, new_h, new_w) int32 of `resize_and_pad` (`resize_placement_np`) for an image of `height` x
    `width`."""
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    scale = tf.minimum(size / h, size / w)
    new_h = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), 1)  # tf.round: half to even, like round()
    new_w = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), 1)
    return tf.stack([(size - new_h) // 2, (size - new_w) // 2, new_h, new_w])


# --- resize image -------------------------------------------------------------------------------------------


def _pil_resize(array: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """Pillow's resize of an (h, w[, C]) array to (height, width) with filter `resample`."""
    return np.asarray(Image.fromarray(array).resize((width, height), resample))


_PIL_PRECISION_BITS = 22  # Pillow's fixed-point coefficients for 8-bit images (Resample.c, 32 - 8 - 2)


def _pil_coefficients(in_size, out_size):
    """Pillow's bilinear resampling taps along one axis (Resample.c `precompute_coeffs`, box = whole image):
    source indices (out, K) and fixed-point weights (out, K) int32, K = 2 ceil(support) + 1."""
    scale = tf.cast(in_size, tf.float64) / tf.cast(out_size, tf.float64)
    filterscale = tf.maximum(scale, 1.0)
    support = filterscale  # the bilinear filter's support is 1
    ksize = tf.cast(tf.math.ceil(support), tf.int32) * 2 + 1
    center = (tf.cast(tf.range(out_size), tf.float64) + 0.5) * scale
    xmin = tf.maximum(tf.cast(tf.floor(center - support + 0.5), tf.int32), 0)
    count = tf.minimum(tf.cast(tf.floor(center + support + 0.5), tf.int32), in_size) - xmin
    taps = tf.range(ksize)[None, :]
    index = xmin[:, None] + taps
    t = (tf.cast(index, tf.float64) - center[:, None] + 0.5) * (1.0 / filterscale)
    weights = tf.maximum(1.0 - tf.abs(t), 0.0) * tf.cast(taps < count[:, None], tf.float64)
    weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
    fixed = tf.cast(tf.floor(weights * (1 << _PIL_PRECISION_BITS) + 0.5), tf.int32)
    return tf.minimum(index, in_size - 1), fixed


def _pil_resample_rows(x: tf.Tensor, out_size) -> tf.Tensor:
    """Pillow's 8-bit bilinear pass along axis 0 of an (n, m, C) uint8 tensor: integer weights, round half up."""
    index, fixed = _pil_coefficients(tf.shape(x)[0], out_size)
    taps = tf.cast(tf.gather(x, index), tf.int32)  # (out, K, m, C)
    total = tf.reduce_sum(taps * fixed[:, :, None, None], axis=1) + (1 << (_PIL_PRECISION_BITS - 1))
    return tf.cast(tf.clip_by_value(tf.bitwise.right_shift(total, _PIL_PRECISION_BITS), 0, 255), tf.uint8)


# Which pass order `_pil_bilinear_resize` follows: the installed Pillow's, so that `exact=True` stays bit-exact with
# `resize_and_pad` (Pillow itself) whichever version another package pins (Gradio, for one, requires Pillow < 13).
_PILLOW_13_PASS_ORDER = int(PIL.__version__.split(".")[0]) >= 13


def _pil_bilinear_resize(image: tf.Tensor, new_h, new_w) -> tf.Tensor:
    """Pillow's BILINEAR resize of an (h, w, C) uint8 image, bit-exact: two separable passes with Pillow's
    fixed-point weights, each rounded to uint8. Pass order as the installed Pillow's: from Pillow 13
    (python-pillow/Pillow#9549) vertical first when the height is reduced and by more than twice the width
    reduction, horizontal first otherwise; older Pillow always horizontal first (the two orders differ by 1 grey
    level on some pixels)."""
    image = tf.cast(image, tf.uint8)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]

    def horizontal(x):
        return tf.transpose(_pil_resample_rows(tf.transpose(x, [1, 0, 2]), new_w), [1, 0, 2])

    def vertical(x):
        return _pil_resample_rows(x, new_h)

    vertical_first = tf.logical_and(new_h < height, (height - new_h) > 2 * (width - new_w)) & _PILLOW_13_PASS_ORDER
    out = tf.cond(vertical_first, lambda: horizontal(vertical(image)), lambda: vertical(horizontal(image)))
    return tf.ensure_shape(out, image.shape[:-3] + [None, None, image.shape[-1]])


def _resize_rows(x: tf.Tensor, out_rows, scale) -> tf.Tensor:
    """(n, m) -> (out_rows, m) float32: the first `out_rows` rows of the row pass of `tf.image.resize(antialias=
    True)` (its ScaleAndTranslate kernel, triangle filter) resizing the n rows by `scale`, each column on its own.

    The m columns go in as the channels of a one-pixel-wide image: the kernel's row pass is then one vectorised
    loop over whole rows, and its column pass (one column, weight exactly 1) copies the values unchanged. An output
    row depends only on its own index, `scale` and n, so asking for fewer rows gives the same leading rows."""
    n, m = tf.shape(x)[0], tf.shape(x)[1]
    resized = tf.raw_ops.ScaleAndTranslate(
        images=tf.reshape(x, [1, n, 1, m]),
        size=tf.stack([out_rows, 1]),
        scale=tf.stack([scale, tf.constant(1.0, tf.float32)]),
        translation=tf.zeros([2], tf.float32),
        kernel_type="triangle",
        antialias=True,
    )
    return tf.reshape(resized, [out_rows, m])


def _antialiased_resize_window(image: tf.Tensor, new_h, new_w, top, left, height, width) -> tf.Tensor:
    """The (height, width, C) float32 window at (top, left) of `tf.image.resize(image, (new_h, new_w), "bilinear",
    antialias=True)`, bit for bit, computed without the rest of the resized image.

    That resize is TF's ScaleAndTranslate kernel: a pass over the rows, then a per-pixel loop over the columns
    whose inner loop runs over the C (3 or 1) channels. Here the column pass is the kernel's row pass again, on the
    transposed intermediate: every output value is the same weighted sum of the same float32 values in the same
    order, hence identical. For one channel (masks) that takes about 2/3 of the time, for a window (a random crop)
    about 4/5 (rows above the window skip the column pass); a whole 3-channel image costs the same either way.
    `uint8` goes in as it is: the kernel converts each pixel to float32 exactly, like a cast would."""
    shape = tf.shape(image)
    h, w, c = shape[0], shape[1], shape[2]
    scale_h = tf.cast(new_h, tf.float32) / tf.cast(h, tf.float32)  # the scales tf.image.resize passes
    scale_w = tf.cast(new_w, tf.float32) / tf.cast(w, tf.float32)
    rows = _resize_rows(tf.reshape(image, [h, w * c]), top + height, scale_h)[top:]  # (height, w * C)
    columns = tf.reshape(tf.transpose(rows), [w, c * height])  # one row per source column: (C, height) values
    columns = _resize_rows(columns, left + width, scale_w)[left:]  # (width, C * height)
    window = tf.reshape(tf.transpose(tf.reshape(columns, [width * c, height])), [height, width, c])
    return tf.ensure_shape(window, [None, None, image.shape[-1]])


def _round_to_uint8(x: tf.Tensor) -> tf.Tensor:
    """floor(x + 0.5) clipped to [0, 255], as uint8 (Pillow's rounding): the cast truncates the clipped,
    non-negative x + 0.5, which is its floor, so no separate floor pass is needed."""
    return tf.cast(tf.clip_by_value(x + 0.5, 0.0, 255.0), tf.uint8)


def _fast_bilinear_resize(image: tf.Tensor, new_h, new_w) -> tf.Tensor:
    """Antialiased bilinear resize (`tf.image.resize(antialias=True)`, the triangle filter Pillow uses) in
    one float pass, rounded half up to uint8: within 1 grey level of Pillow's, several times faster than
    `_pil_bilinear_resize`."""
    return _round_to_uint8(_antialiased_resize_window(image, new_h, new_w, 0, 0, new_h, new_w))


def bilinear_resize(image: tf.Tensor, new_h, new_w, exact: bool) -> tf.Tensor:
    """Pillow's BILINEAR resize of an (h, w, C) uint8 image to (new_h, new_w): bit-exact with `exact`, else one
    antialiased float pass within 1 grey level of it."""
    return (_pil_bilinear_resize if exact else _fast_bilinear_resize)(image, new_h, new_w)


def bilinear_resize_crop(image: tf.Tensor, new_h, new_w, top, left, height, width, exact: bool) -> tf.Tensor:
    """`bilinear_resize(image, new_h, new_w, exact)[top : top + height, left : left + width]` (a window inside the
    resized image); the default mode computes only that window (a random crop of a rescaled image)."""
    if exact:
        return _pil_bilinear_resize(image, new_h, new_w)[top : top + height, left : left + width]
    return _round_to_uint8(_antialiased_resize_window(image, new_h, new_w, top, left, height, width))


# Bilinear resizes inside the model (logits, response maps, the loss's targets), not of input images.
RESIZE_CONVENTIONS = ("half_pixel", "reference")


def resize_bilinear(images: tf.Tensor, size: tuple[int, int], convention: str) -> tf.Tensor:
    """Bilinearly resizes a (B, H, W, C) batch to `size` = (height, width).

    Args:
        images: float tensor of shape (B, H, W, C) (or (H, W, C): `undo_resize_and_pad` resizes one crop).
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


# --- resize mask / labels -----------------------------------------------------------------------------------
# numpy: `resize_and_pad(mask)[0] > 0` (bilinear, then > 0) and `resize_and_pad(labels, resample=Image.NEAREST)`.


def _pil_nearest_indices(in_size, out_size) -> tf.Tensor:
    """Source indices of PIL's NEAREST resize along one axis: x_k = in/out * (k + 1/2) accumulated by
    repeated float64 addition (as PIL's ImagingScaleAffine does), truncated, clipped to in - 1."""
    step = tf.cast(in_size, tf.float64) / tf.cast(out_size, tf.float64)
    steps = tf.concat([[step * 0.5], tf.fill([tf.maximum(out_size - 1, 0)], step)], axis=0)[:out_size]
    coords = tf.math.cumsum(steps)
    return tf.minimum(tf.cast(tf.floor(coords), tf.int32), in_size - 1)


def _gather_rows_and_columns(image: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """image[rows][:, cols] of an (h, w) or (h, w, C) tensor."""
    picked = tf.gather(image, rows, axis=0)
    if picked.shape.rank == 2:
        # Columns of a 2-D map as rows of its transpose: the gather then copies runs of values, not single ones.
        return tf.transpose(tf.gather(tf.transpose(picked), cols, axis=0))
    return tf.gather(picked, cols, axis=1)


def nearest_resize(image: tf.Tensor, new_h, new_w) -> tf.Tensor:
    """PIL NEAREST resize of an (h, w) or (h, w, C) tensor of any dtype."""
    shape = tf.shape(image)
    rows = _pil_nearest_indices(shape[0], new_h)
    cols = _pil_nearest_indices(shape[1], new_w)
    return _gather_rows_and_columns(image, rows, cols)


def nearest_resize_crop(image: tf.Tensor, new_h, new_w, top, left, height, width) -> tf.Tensor:
    """`nearest_resize(image, new_h, new_w)[top : top + height, left : left + width]`, gathering only that window."""
    shape = tf.shape(image)
    rows = _pil_nearest_indices(shape[0], new_h)[top : top + height]
    cols = _pil_nearest_indices(shape[1], new_w)[left : left + width]
    return _gather_rows_and_columns(image, rows, cols)


# --- pad ------------------------------------------------------------------------------------------------------


def _pad_to_np(resized: np.ndarray, placement, size: int | Sequence[int], like: np.ndarray) -> np.ndarray:
    """A zero (height, width) + like.shape[2:] canvas of like.dtype holding `resized` at `placement`."""
    top, left, new_h, new_w = placement
    padded = np.zeros(_sides(size) + like.shape[2:], like.dtype)
    padded[top : top + new_h, left : left + new_w] = resized
    return padded


def pad_to(image: tf.Tensor, top, left, size: int, value) -> tf.Tensor:
    """`image` (h, w[, C]) at (top, left) in a (size, size[, C]) canvas filled with `value`."""
    shape = tf.shape(image)
    bottom, right = size - top - shape[0], size - left - shape[1]
    value = tf.cast(value, image.dtype)
    if image.shape.rank == 3:
        # Pads the (h, w * C) view: tf.pad then copies whole rows instead of one C-element pixel at a time.
        channels = shape[2]
        rows = tf.reshape(image, [shape[0], shape[1] * channels])
        padded = tf.pad(rows, [[top, bottom], [left * channels, right * channels]], constant_values=value)
        padded = tf.reshape(padded, [size, size, channels])
    else:
        paddings = [[top, bottom], [left, right]] + [[0, 0]] * (image.shape.rank - 2)
        padded = tf.pad(image, paddings, constant_values=value)
    return tf.ensure_shape(padded, [size, size] + image.shape[2:].as_list())


# --- resize and pad -------------------------------------------------------------------------------------------


def resize_and_pad(
    image: np.ndarray, size: int | Sequence[int], resample: int = Image.BILINEAR
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Resizes keeping the aspect ratio to fit `size` x `size` (or a (height, width) pair), then zero-pads centred.

    scale = min(size / h, size / w), new sizes rounded half to even (Python's `round`), at least 1; the resized
    image sits in a size x size zero canvas at top = floor((size - new_h) / 2), left likewise. A (height, width)
    size places it as the parsing pipeline's non-square evaluation input does.

    Returns:
        The padded image and (top, left, new_h, new_w), which `unpad_and_resize` uses to go back.
    """
    height, width = image.shape[:2]
    placement = resize_placement_np(height, width, size)
    resized = _pil_resize(image, placement[2], placement[3], resample)
    return _pad_to_np(resized, placement, size, like=image), placement


def resize_and_pad_image(image: tf.Tensor, size: int, *, exact: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """TF `resize_and_pad` of an (h, w, C) uint8 image: ((S, S, C) uint8, placement (4,) int32).

    `exact=True` reproduces Pillow's BILINEAR bit for bit (slower); the default is within 1 grey level."""
    shape = tf.shape(image)
    placement = resize_placement(shape[0], shape[1], size)
    resized = bilinear_resize(image, placement[2], placement[3], exact)
    return pad_to(resized, placement[0], placement[1], size, 0), placement


def resize_and_pad_mask(mask: tf.Tensor, placement: tf.Tensor, size: int, *, exact: bool = False) -> tf.Tensor:
    """(h, w) 0/1 mask -> (S, S) float32 0/1: bilinear resize to uint8 as `resize_and_pad_image`, then > 0
    (i.e. interpolated value >= 0.5), zero-padded at `placement`."""
    resized = bilinear_resize(tf.cast(mask > 0, tf.uint8)[..., None], placement[2], placement[3], exact)
    return pad_to(tf.cast(tf.squeeze(resized, -1) > 0, tf.float32), placement[0], placement[1], size, 0)


def resize_and_pad_image_and_mask(image: tf.Tensor, mask: tf.Tensor, size: int, *, exact: bool = False):
    """`resize_and_pad_image` and `resize_and_pad_mask` at the image's placement. Returns ((S, S, 3) uint8,
    (S, S) float32, placement). (Both resizes treat every channel on its own, so this equals resizing the mask as
    a 4th channel of the image; stacking it there would cost more than the mask's own resize: a concat along the
    channel axis copies one pixel at a time.)"""
    padded, placement = resize_and_pad_image(image, size, exact=exact)
    return padded, resize_and_pad_mask(mask, placement, size, exact=exact), placement


def resize_and_pad_labels(
    labels: tf.Tensor, placement: tf.Tensor, size: int, pad_value: int = IGNORE_LABEL
) -> tf.Tensor:
    """(h, w) label map -> (S, S) int32: PIL nearest resize, padded with `pad_value` (255 = ignore)."""
    resized = nearest_resize(tf.cast(labels, tf.int32), placement[2], placement[3])
    return pad_to(resized, placement[0], placement[1], size, pad_value)


# --- map back -------------------------------------------------------------------------------------------------


def unpad_and_resize(
    padded_mask: np.ndarray, placement: tuple[int, int, int, int], original_size: tuple[int, int]
) -> np.ndarray:
    """Inverse of `resize_and_pad` for a label map: crop the placed region, resize to the original (nearest).

    Not the RMI authors' scale-and-centre-crop; the difference: docs/decisions.md#evaluation-map-back."""
    top, left, new_h, new_w = placement
    crop = np.ascontiguousarray(padded_mask[top : top + new_h, left : left + new_w])
    height, width = original_size
    return _pil_resize(crop, height, width, Image.NEAREST)


def unpad_and_resize_float(values: np.ndarray, placement, original_size) -> np.ndarray:
    """Crops a padded-size float map to the image region and resizes it to the original size with Pillow's
    BILINEAR (float32 "F" mode; smooth maps such as response maps)."""
    top, left, new_h, new_w = placement
    crop = np.ascontiguousarray(values[top : top + new_h, left : left + new_w], np.float32)
    height, width = original_size
    return np.asarray(Image.fromarray(crop, mode="F").resize((width, height), Image.BILINEAR))


def undo_resize_and_pad(prediction: tf.Tensor, placement, original_size, method: str = "nearest") -> tf.Tensor:
    """Maps one (S, S) or (S, S, C) prediction back to the original (h, w[, C]) resolution.

    Crops the placed region (top, left, new_h, new_w) and resizes it to `original_size` (height, width).
    "nearest" (label maps, 0/1 masks; any dtype) equals `unpad_and_resize`; "bilinear" (float
    logits/probabilities, threshold afterwards) uses `tf.image.resize`'s half-pixel bilinear. How this differs
    from the RMI authors' scale-and-centre-crop, and when it matters: docs/decisions.md#evaluation-map-back.
    """
    prediction = tf.convert_to_tensor(prediction)
    placement = tf.cast(placement, tf.int32)
    original_size = tf.cast(original_size, tf.int32)
    if prediction.shape.rank not in (2, 3):
        raise ValueError(
            f"prediction must be (S, S) or (S, S, C), got shape {prediction.shape}; for a batch use "
            "undo_resize_and_pad_batch"
        )
    top, left, new_h, new_w = placement[0], placement[1], placement[2], placement[3]
    crop = prediction[top : top + new_h, left : left + new_w]
    if method == "nearest":
        return nearest_resize(crop, original_size[0], original_size[1])
    if method == "bilinear":
        squeeze = prediction.shape.rank == 2
        crop = crop[..., None] if squeeze else crop
        out = resize_bilinear(tf.cast(crop, tf.float32), original_size, "half_pixel")
        return out[..., 0] if squeeze else out
    raise ValueError(f"method must be 'nearest' or 'bilinear', got {method!r}")


def undo_resize_and_pad_batch(
    predictions, placements, original_sizes, method: str = "nearest", pad_value=0
) -> tf.Tensor:
    """`undo_resize_and_pad` of a (B, S, S[, C]) batch, padded with `pad_value` to (B, Hmax, Wmax[, C]) like the
    evaluation elements' "original_mask"/"original_labels" (valid region `[:h, :w]`)."""
    predictions = tf.convert_to_tensor(predictions)
    placements = tf.cast(placements, tf.int32)
    original_sizes = tf.cast(original_sizes, tf.int32)
    max_h, max_w = tf.reduce_max(original_sizes[:, 0]), tf.reduce_max(original_sizes[:, 1])

    def one(args):
        prediction, placement, size = args
        out = undo_resize_and_pad(prediction, placement, size, method)
        paddings = [[0, max_h - size[0]], [0, max_w - size[1]]] + [[0, 0]] * (out.shape.rank - 2)
        return tf.pad(out, paddings, constant_values=tf.cast(pad_value, out.dtype))

    dtype = tf.float32 if method == "bilinear" else predictions.dtype
    spec = tf.TensorSpec([None, None] + predictions.shape[3:].as_list(), dtype)
    return tf.map_fn(one, (predictions, placements, original_sizes), fn_output_signature=spec)


# --- normalise ------------------------------------------------------------------------------------------------
# RGB -> BGR minus a mean, no scaling (docs/reference_conventions.md#image-preprocessing).

# Caffe ResNet/DeepLab weights (the RMI authors').
CAFFE_BGR_MEAN = np.array([104.00698793, 116.66876762, 122.67891434], np.float32)
# keras.applications.{resnet,vgg16}.preprocess_input ("caffe" mode).
IMAGENET_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)
# One name per operation, saying what it does.
BGR_MINUS_CAFFE_RESNET_MEAN = "bgr_minus_caffe_resnet_mean"  # the authors' Caffe ResNet/DeepLab weights
BGR_MINUS_IMAGENET_MEAN = "bgr_minus_imagenet_mean"  # keras.applications resnet / vgg16 preprocess_input
NORMALIZATION_MEANS = {BGR_MINUS_CAFFE_RESNET_MEAN: CAFFE_BGR_MEAN, BGR_MINUS_IMAGENET_MEAN: IMAGENET_BGR_MEAN}
# Each task's default, the value of the config schema's `data.normalization` (defaults.py).
REFERRING_NORMALIZATION = BGR_MINUS_CAFFE_RESNET_MEAN  # the authors' ResNet/DeepLab weights
PARSING_NORMALIZATION = BGR_MINUS_IMAGENET_MEAN  # LG-LSTM's VGG-16 base (keras vgg16 preprocess_input)
# What `referring_dataset` accepts (ResNet backbones: Caffe or keras.applications weights).
REFERRING_NORMALIZATIONS = (BGR_MINUS_CAFFE_RESNET_MEAN, BGR_MINUS_IMAGENET_MEAN)


def check_normalization(normalization: str, name: str = "normalization") -> str:
    """`normalization`; raises ValueError (naming `name`) unless it is a key of `NORMALIZATION_MEANS`."""
    if normalization not in NORMALIZATION_MEANS:
        raise ValueError(f"{name} must be one of {sorted(NORMALIZATION_MEANS)}, got {normalization!r}")
    return normalization


def caffe_preprocess(images: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., H, W, 3) or grayscale (..., H, W) -> float32 BGR minus the Caffe mean."""
    images = np.asarray(images)
    if images.ndim >= 2 and (images.ndim == 2 or images.shape[-1] not in (1, 3, 4)):
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)  # grayscale to 3 channels
    if images.shape[-1] != 3:
        images = images[..., :3]  # drop alpha
    return images[..., ::-1].astype(np.float32) - CAFFE_BGR_MEAN


def normalize_images_np(images: np.ndarray, normalization: str) -> np.ndarray:
    """numpy `normalize_images`: RGB (..., 3) uint8 -> float32 BGR minus the mean of `normalization`
    ("bgr_minus_caffe_resnet_mean": `caffe_preprocess`, which also takes grayscale and RGBA)."""
    normalization = check_normalization(normalization)
    if normalization == BGR_MINUS_CAFFE_RESNET_MEAN:
        return caffe_preprocess(images)
    return images[..., ::-1].astype(np.float32) - np.asarray(NORMALIZATION_MEANS[normalization], np.float32)


def denormalize_images(images, normalization: str) -> np.ndarray:
    """Inverse of `normalize_images`: normalised BGR float (..., 3) -> uint8 RGB (the padded network
    input; padding comes back as 0). Exact: the pipeline normalised uint8 pixels in float32."""
    normalization = check_normalization(normalization)
    bgr = np.asarray(images, np.float32) + NORMALIZATION_MEANS[normalization]
    return np.clip(np.rint(bgr[..., ::-1]), 0, 255).astype(np.uint8)


def denormalize_images_tf(images: tf.Tensor, normalization: str) -> tf.Tensor:
    """TF twin of `denormalize_images` for display: normalised BGR -> RGB floats in [0, 1] (TensorBoard images)."""
    normalization = check_normalization(normalization)
    mean = tf.constant(NORMALIZATION_MEANS[normalization], tf.float32)
    return tf.clip_by_value(tf.reverse(images + mean, axis=[-1]) / 255.0, 0.0, 1.0)


def normalize_images(images: tf.Tensor, normalization: str) -> tf.Tensor:
    """RGB (..., 3) pixels in [0, 255] (any dtype) -> float32 BGR minus the mean of `normalization`.

    "bgr_minus_caffe_resnet_mean": Caffe ResNet/DeepLab mean (104.00698793, 116.66876762, 122.67891434);
    "bgr_minus_imagenet_mean": ImageNet mean (103.939, 116.779, 123.68), equal to keras.applications.resnet /
    vgg16 `preprocess_input`.
    """
    normalization = check_normalization(normalization)
    images = tf.cast(images, tf.float32)
    return tf.reverse(images, axis=[-1]) - tf.constant(NORMALIZATION_MEANS[normalization], tf.float32)
