"""TFRecord schemas, the sharded writer and manifest, and the converters' image reading rules."""

import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_recurrent_seg.data.image_io import BadRecord, decode_image_bytes, decode_label_bytes, read_image, read_label_map
from tf_recurrent_seg.data.records import (
    ShardedRecordWriter,
    decode_parsing,
    decode_referring,
    manifest_path,
    parsing_example,
    read_manifest,
    referring_example,
    shard_paths,
)

RNG = np.random.default_rng(5)


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_referring_round_trip_and_round_robin_shards(tmp_path):
    image = RNG.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    masks = [(RNG.random((30, 40)) > 0.5).astype(np.uint8) for _ in range(5)]
    with ShardedRecordWriter(str(tmp_path / "train"), 2, task="referring", source="fixture") as writer:
        for index, mask in enumerate(masks):
            writer.write(
                referring_example(
                    png_bytes(image), 30, 40, "a.png", mask * 7, f"thing {index}", index, 10 + index, "unc", "train"
                )
            )
    manifest = read_manifest(str(tmp_path / "train"))
    assert manifest["num_examples"] == 5 and [shard["num_examples"] for shard in manifest["shards"]] == [3, 2]
    by_ref = {}
    for record in tf.data.TFRecordDataset(shard_paths(str(tmp_path / "train"), 2)).map(decode_referring):
        by_ref[int(record["ref_id"])] = record
    for index, mask in enumerate(masks):
        record = by_ref[index]
        np.testing.assert_array_equal(record["image"], image)
        np.testing.assert_array_equal(record["mask"], mask)  # stored as 0/1 whatever the nonzero value
        assert record["expression/raw"].numpy().decode() == f"thing {index}" and int(record["sent_id"]) == 10 + index


def test_parsing_round_trip_and_label_checks(tmp_path):
    image = RNG.integers(0, 255, (9, 7, 3), dtype=np.uint8)
    labels = RNG.integers(0, 5, (9, 7), dtype=np.uint8)
    labels[0, 0] = 255
    with ShardedRecordWriter(
        str(tmp_path / "test"), 1, task="parsing", source="fixture", class_names=list("abcde")
    ) as writer:
        writer.write(parsing_example(png_bytes(image), 9, 7, "x.png", labels, 5, "horse_cow", "test"))
        with pytest.raises(ValueError, match=r"ids \[7\] outside \[0, 5\)"):
            parsing_example(png_bytes(image), 9, 7, "y.png", np.full((9, 7), 7, np.uint8), 5, "horse_cow", "test")
        with pytest.raises(ValueError, match="label map has shape"):
            parsing_example(png_bytes(image), 9, 7, "z.png", labels[:5], 5, "horse_cow", "test")
        writer.skip("y.png", "label ids outside the class list")
    record = next(iter(tf.data.TFRecordDataset(shard_paths(str(tmp_path / "test"), 1)).map(decode_parsing)))
    np.testing.assert_array_equal(record["labels"], labels)
    manifest = read_manifest(str(tmp_path / "test"))
    assert manifest["class_names"] == list("abcde")
    assert manifest["skipped"] == {"label ids outside the class list": 1}
    assert manifest["skipped_records"] == [{"record": "y.png", "reason": "label ids outside the class list"}]


def test_interrupted_conversion_leaves_no_finished_looking_output(tmp_path):
    prefix = str(tmp_path / "train")
    with pytest.raises(RuntimeError):
        with ShardedRecordWriter(prefix, 2, task="parsing", source="fixture") as writer:
            writer.write(
                parsing_example(
                    png_bytes(np.zeros((2, 2, 3), np.uint8)), 2, 2, "a", np.zeros((2, 2), np.uint8), 1, "d", "s"
                )
            )
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="did not finish"):
        read_manifest(prefix)


def test_same_input_gives_identical_shards(tmp_path):
    def convert(prefix):
        with ShardedRecordWriter(prefix, 3, task="parsing", source="fixture") as writer:
            for index in range(7):
                labels = np.full((3, 3), index % 2, np.uint8)
                writer.write(
                    parsing_example(
                        png_bytes(np.full((3, 3, 3), index, np.uint8)), 3, 3, str(index), labels, 2, "d", "s"
                    )
                )
        return [shard["sha256"] for shard in read_manifest(prefix)["shards"]]

    assert convert(str(tmp_path / "a" / "train")) == convert(str(tmp_path / "b" / "train"))
    assert json.loads(open(manifest_path(str(tmp_path / "a" / "train"))).read())["task"] == "parsing"


def test_image_reading_rules(tmp_path):
    rgb = RNG.integers(0, 255, (5, 6, 3), dtype=np.uint8)
    data, pixels = decode_image_bytes(png_bytes(rgb))
    np.testing.assert_array_equal(pixels, rgb)
    gray = RNG.integers(0, 255, (5, 6), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image_bytes(png_bytes(gray))[1], np.repeat(gray[..., None], 3, axis=-1))
    rgba = np.concatenate([rgb, np.full((5, 6, 1), 9, np.uint8)], axis=-1)
    stored, pixels = decode_image_bytes(png_bytes(rgba))
    np.testing.assert_array_equal(pixels, rgb)  # alpha dropped
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(stored))), rgb)  # what is stored decodes the same
    deep = gray.astype(np.uint16) * 257  # 16-bit: 255 * 257 = 65535
    assert Image.fromarray(deep).mode == "I;16"
    np.testing.assert_array_equal(decode_image_bytes(png_bytes(deep))[1][..., 0], gray)
    with pytest.raises(BadRecord, match="corrupt or truncated"):
        decode_image_bytes(png_bytes(rgb)[:40])
    with pytest.raises(BadRecord, match="missing image file"):
        read_image(str(tmp_path / "nope.jpg"))
    with pytest.raises(BadRecord, match="single-channel"):
        decode_label_bytes(png_bytes(rgb))
    palette = Image.fromarray(np.array([[0, 3], [17, 2]], np.uint8), mode="P")
    palette.putpalette([value for index in range(256) for value in (index, 255 - index, 0)])
    palette.save(tmp_path / "labels.png")
    np.testing.assert_array_equal(
        read_label_map(str(tmp_path / "labels.png")), [[0, 3], [17, 2]]
    )  # indices, not colours
