"""An encoded image's size read from its header, before any decoding: the guard against decompression bombs.

A 48 KB PNG can declare 20000 x 20000 pixels; decoding it takes gigabytes. Every entry point that takes image
bytes from outside (the tf.data pipelines, the serving signatures, `predict`) reads the size from the header
first and refuses an image over a pixel limit without decoding it. The header layouts (all sizes in pixels):

- PNG: the IHDR chunk follows the 8-byte signature; width and height are big-endian uint32 at bytes 16 and 20
  (bit depth at 24, colour type at 25).
- GIF: the logical screen's width and height, little-endian uint16 at bytes 6 and 8.
- BMP: a BITMAPINFOHEADER (or later) at byte 14 holds width and height as little-endian int32 at bytes 18 and
  22 (a negative height means rows run top-down).
- WebP ("RIFF" size "WEBP", then one chunk at byte 12): "VP8X" stores canvas width - 1 and height - 1 as
  24-bit little-endian at bytes 24 and 27; "VP8L" packs width - 1 and height - 1 in 14 bits each from byte 21;
  "VP8 " (lossy) has 14-bit width and height, little-endian, at bytes 26 and 28.
- JPEG: the first start-of-frame marker (SOF0-SOF15 but DHT C4, JPG C8, DAC CC) holds height and width as
  big-endian uint16 at its bytes 5 and 7 (`tf.image.extract_jpeg_shape` in the graph).

The numpy-side `header_size` and the graph-side `header_size_tf` implement the same rules; tests check both
against the sizes Pillow reports.
"""

from __future__ import annotations

import struct

import tensorflow as tf

from tf_recurrent_seg.defaults import MAX_IMAGE_PIXELS

DEFAULT_MAX_PIXELS = MAX_IMAGE_PIXELS
UNKNOWN = (-1, -1)

_JPEG_SOF = {0xC0 + i for i in range(16)} - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    position = 2  # after SOI
    while position + 9 <= len(data):
        if data[position] != 0xFF:
            return UNKNOWN
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return height, width
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            position += 2
            continue
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
    return UNKNOWN


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        return int.from_bytes(data[27:30], "little") + 1, width
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return height & 0x3FFF, width & 0x3FFF
    return UNKNOWN


def header_size(data: bytes) -> tuple[int, int]:
    """(height, width) of encoded JPEG, PNG, GIF, BMP or WebP bytes from their header; (-1, -1) when the bytes
    are none of these or too short to say."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    if data[:4] == b"GIF8" and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return height, width
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(height), abs(width)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_size(data)
    return UNKNOWN


def too_large_message(height: int, width: int, max_pixels: int, what: str = "image") -> str:
    return (
        f"{what} is {height}x{width} = {height * width} pixels, over the limit of {max_pixels} pixels "
        "(refused before decoding: raise the limit if the image is genuine)"
    )


def check_pixel_limit(data: bytes, max_pixels: int, what: str = "image") -> tuple[int, int]:
    """`header_size(data)`; ValueError with `too_large_message` when height x width > `max_pixels`."""
    height, width = header_size(data)
    if height * width > max_pixels:
        raise ValueError(too_large_message(height, width, max_pixels, what))
    return height, width


# --- the same rules in the graph ------------------------------------------------------------------------------


def _bytes_at(padded: tf.Tensor, offset: int, length: int) -> tf.Tensor:
    return tf.cast(tf.io.decode_raw(tf.strings.substr(padded, offset, length), tf.uint8), tf.int64)


def _uint(padded: tf.Tensor, offset: int, length: int, big_endian: bool) -> tf.Tensor:
    values = _bytes_at(padded, offset, length)
    weights = tf.constant([256**i for i in range(length)][:: -1 if big_endian else 1], tf.int64)
    return tf.reduce_sum(values * weights)


def _int32_le(padded: tf.Tensor, offset: int) -> tf.Tensor:
    value = _uint(padded, offset, 4, big_endian=False)
    return tf.abs(tf.where(value >= 2**31, value - 2**32, value))


def _tf_webp_size(padded: tf.Tensor) -> tf.Tensor:
    chunk = tf.strings.substr(padded, 12, 4)
    vp8l_bits = _uint(padded, 21, 4, big_endian=False)
    sizes = {
        b"VP8X": tf.stack([_uint(padded, 27, 3, False) + 1, _uint(padded, 24, 3, False) + 1]),
        b"VP8L": tf.stack([(vp8l_bits // 2**14) % 2**14 + 1, vp8l_bits % 2**14 + 1]),
        b"VP8 ": tf.stack([_uint(padded, 28, 2, False) % 2**14, _uint(padded, 26, 2, False) % 2**14]),
    }
    size = tf.constant(UNKNOWN, tf.int64)
    for name, value in sizes.items():
        size = tf.where(tf.equal(chunk, name), value, size)
    return size


def header_size_tf(contents: tf.Tensor) -> tf.Tensor:
    """`header_size` in the graph: (2,) int64 [height, width] of a scalar string of image bytes; [-1, -1]
    for bytes of another kind. A JPEG whose markers are broken fails in `tf.image.extract_jpeg_shape`."""
    padded = tf.strings.join([contents, b"\x00" * 32])  # substr past the end would fail on short input

    def starts(magic: bytes, offset: int = 0):
        return tf.equal(tf.strings.substr(padded, offset, len(magic)), magic)

    png = tf.stack([_uint(padded, 20, 4, True), _uint(padded, 16, 4, True)])
    gif = tf.stack([_uint(padded, 8, 2, False), _uint(padded, 6, 2, False)])
    bmp = tf.stack([_int32_le(padded, 22), _int32_le(padded, 18)])
    size = tf.constant(UNKNOWN, tf.int64)
    size = tf.where(starts(b"\x89PNG\r\n\x1a\n"), png, size)
    size = tf.where(starts(b"GIF8"), gif, size)
    size = tf.where(starts(b"BM"), bmp, size)
    size = tf.where(starts(b"RIFF") & starts(b"WEBP", 8), _tf_webp_size(padded), size)
    return tf.cond(
        starts(b"\xff\xd8\xff"),
        lambda: tf.cast(tf.image.extract_jpeg_shape(contents)[:2], tf.int64),
        lambda: size,
    )
