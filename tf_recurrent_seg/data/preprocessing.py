"""Image preprocessing the reference weights expect (docs/reference_conventions.md#image-preprocessing)."""

import numpy as np
from PIL import Image

# Caffe ResNet/DeepLab weights: BGR channel means, no scaling (docs/reference_conventions.md#image-preprocessing).
CAFFE_BGR_MEAN = np.array([104.00698793, 116.66876762, 122.67891434], np.float32)


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


def resize_and_pad(image: np.ndarray, size: int, resample: int = Image.BILINEAR) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Resizes keeping the aspect ratio to fit `size` x `size`, then zero-pads centred.

    scale = min(size / h, size / w), new sizes rounded; pad top = floor((size - new_h) / 2), left likewise.

    Returns:
        The padded image and (top, left, new_h, new_w), which `unpad_and_resize` uses to go back.
    """
    height, width = image.shape[:2]
    scale = min(size / height, size / width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), resample))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    padded = np.zeros((size, size) + image.shape[2:], image.dtype)
    padded[top : top + new_h, left : left + new_w] = resized
    return padded, (top, left, new_h, new_w)


def unpad_and_resize(padded_mask: np.ndarray, placement: tuple[int, int, int, int], original_size: tuple[int, int]) -> np.ndarray:
    """Inverse of `resize_and_pad` for a label map: crop the placed region, resize to the original (nearest).

    Not the RMI authors' scale-and-centre-crop; the difference: docs/decisions.md#evaluation-map-back."""
    top, left, new_h, new_w = placement
    crop = np.ascontiguousarray(padded_mask[top : top + new_h, left : left + new_w])
    height, width = original_size
    return np.asarray(Image.fromarray(crop).resize((width, height), Image.NEAREST))
