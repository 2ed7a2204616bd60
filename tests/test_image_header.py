"""Image sizes read from headers (the decompression-bomb guard) against the sizes Pillow reports."""

import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, features

from tf_recurrent_seg.data import image_header


def encoded(fmt: str, height: int = 37, width: int = 53, mode: str = "RGB", **options) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, len(mode)), np.uint8)
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header_only(height: int, width: int) -> bytes:
    """A PNG that declares height x width (8-bit grey) with one empty IDAT: what a bomb's header looks like."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


CASES = {
    "png": lambda: encoded("PNG"),
    "png_grey": lambda: encoded("PNG", mode="L"),
    "jpeg": lambda: encoded("JPEG"),
    "jpeg_progressive": lambda: encoded("JPEG", progressive=True, quality=80),
    "gif": lambda: encoded("GIF"),
    "bmp": lambda: encoded("BMP"),
}
if features.check("webp"):
    CASES.update(
        {
            "webp_lossy": lambda: encoded("WEBP"),
            "webp_lossless": lambda: encoded("WEBP", lossless=True),
            "webp_extended": lambda: encoded("WEBP", mode="RGBA"),
        }
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_header_size_matches_pillow(name):
    data = CASES[name]()
    expected = Image.open(io.BytesIO(data)).size[::-1]  # Pillow: (width, height)
    assert image_header.header_size(data) == expected == (37, 53)
    assert tuple(image_header.header_size_tf(tf.constant(data)).numpy()) == expected


def test_webp_chunk_kinds_are_all_covered():
    if not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    kinds = {CASES[name]()[12:16] for name in ("webp_lossy", "webp_lossless", "webp_extended")}
    assert kinds == {b"VP8 ", b"VP8L", b"VP8X"}


def test_bmp_top_down_height_is_positive():
    data = bytearray(encoded("BMP", height=5, width=7))
    data[22:26] = struct.pack("<i", -5)  # rows stored top-down
    assert image_header.header_size(bytes(data)) == (5, 7)
    assert tuple(image_header.header_size_tf(tf.constant(bytes(data))).numpy()) == (5, 7)


@pytest.mark.parametrize("data", [b"", b"\x89PNG", b"not an image at all", b"RIFF\x00\x00\x00\x00WEBPVP9 "])
def test_unknown_or_short_bytes(data):
    assert image_header.header_size(data) == (-1, -1)
    assert tuple(image_header.header_size_tf(tf.constant(data)).numpy()) == (-1, -1)


def test_bomb_is_refused_from_its_header():
    bomb = png_header_only(20000, 20000)
    assert len(bomb) < 100 and image_header.header_size(bomb) == (20000, 20000)
    with pytest.raises(ValueError, match=r"image is 20000x20000 = 400000000 pixels, over the limit of 64000000"):
        image_header.check_pixel_limit(bomb, image_header.DEFAULT_MAX_PIXELS)
    assert image_header.check_pixel_limit(CASES["png"](), 37 * 53) == (37, 53)  # the limit itself is allowed
