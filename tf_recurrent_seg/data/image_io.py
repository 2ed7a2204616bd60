"""Reading source images and label maps for the converters, with the bad-input rules of the project.

Handled: grayscale and palette images become RGB, an alpha channel is dropped, 16-bit images are scaled to
8 bits. Refused with `BadRecord` (the converter skips the record, warns and counts it in the manifest): a
missing file, a corrupt or truncated file, an image whose header declares more pixels than the limit
(`image_header`; it is not decoded).
"""

import io
import os
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

from tf_recurrent_seg.data.image_header import DEFAULT_MAX_PIXELS, header_size, too_large_message


class BadRecord(Exception):
    """A source record that cannot be converted; the converter skips it and goes on.

    `reason` is a short category, counted in the manifest; `detail` (a path, an id, the error) is appended to
    the record's name in the warning and in the manifest's list of skipped records.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


# An object's repr with its address, e.g. PIL's "cannot identify image file <_io.BytesIO object at 0x7f...>".
_OBJECT_ADDRESS = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


def error_text(error: BaseException) -> str:
    """`str(error)` without object addresses, so that a re-run writes the same manifest byte for byte."""
    return _OBJECT_ADDRESS.sub("", str(error)).strip() or type(error).__name__


def _decode(data: bytes, what: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    height, width = header_size(data)
    if height * width > max_pixels:  # a decompression bomb: refused from its header, never decoded
        raise BadRecord(f"{what} too large", too_large_message(height, width, max_pixels, what))
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # decodes fully: a truncated file fails here, not later
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise BadRecord(f"corrupt or truncated {what}", error_text(error)) from None
    return image


def _read_bytes(path: str, what: str) -> bytes:
    if not os.path.exists(path):
        raise BadRecord(f"missing {what} file", path)
    with open(path, "rb") as file:
        return file.read()


def image_to_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 from any PIL image: gray/palette to RGB, alpha dropped, 16-bit scaled to 8 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Scale by the type's range, never by the data, so every image of a source scales alike.
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8))
    return np.asarray(image.convert("RGB"))


def decode_image_bytes(
    data: bytes, what: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[bytes, np.ndarray]:
    """Decodes image bytes; returns (bytes to store, (H, W, 3) uint8 pixels).

    The original bytes are kept when they are an 8-bit RGB JPEG or PNG; anything converted is stored as PNG,
    so the stored image decodes to exactly the returned pixels. An image whose header declares more than
    `max_pixels` pixels is refused (`BadRecord` "image too large") without being decoded.
    """
    image = _decode(data, what, max_pixels)
    pixels = image_to_rgb(image)
    if image.format in ("JPEG", "PNG") and image.mode == "RGB":
        return data, pixels
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), pixels


def read_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, np.ndarray]:
    """`decode_image_bytes` of a file; BadRecord when it is missing, too large, corrupt or truncated."""
    return decode_image_bytes(_read_bytes(path, "image"), "image", max_pixels)


def decode_label_bytes(data: bytes, what: str = "label map") -> np.ndarray:
    """(H, W) uint8 class ids from a PNG label map (palette indices or gray values); BadRecord otherwise."""
    image = _decode(data, what)
    if image.mode not in ("P", "L", "I;16", "I;16B", "I;16L", "I"):
        raise BadRecord(f"{what} is not a single-channel PNG of class ids", f"mode {image.mode}")
    labels = np.asarray(image)
    if labels.max(initial=0) > 255:
        raise BadRecord(f"{what} holds ids above 255", f"max {labels.max()}")
    return labels.astype(np.uint8)


def read_label_map(path: str) -> np.ndarray:
    """`decode_label_bytes` of a file; BadRecord when it is missing, corrupt or not a label map."""
    return decode_label_bytes(_read_bytes(path, "label map"), "label map")
