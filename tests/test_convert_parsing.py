"""The parsing converters (data_tools.atr, .lip, .fashionista, .pascal_part) on fixtures written in each dataset's
exact source format: JPEG images + palette/gray PNG label maps + id lists, a Fashionista .mat written with
scipy.io.savemat, PASCAL-Part `Annotations_Part/<id>.mat` files. Expected labels are written by hand from the
fixture geometry and the documented mappings, never computed by the converters' own functions.
"""

import hashlib
import io
import json
import os
import pathlib
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
scipy_io = pytest.importorskip("scipy.io")

from data_tools import atr, fashionista, lip, pascal_part  # noqa: E402
from tf_recurrent_seg import defaults  # noqa: E402
from tf_recurrent_seg.data.records import decode_parsing, read_manifest, shard_paths  # noqa: E402

RNG = np.random.default_rng(11)


# ---------------------------------------------------------------------------------------------------------
# Fixture writers and readers


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_bytes(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def random_image(height: int, width: int) -> np.ndarray:
    # smooth content, so the JPEGs are realistic; exact pixels are checked on the stored bytes
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 4 % 256, cols * 6 % 256, (rows + cols) * 3 % 256], -1).astype(np.uint8)


def png16_rgb_bytes(array: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), written chunk by chunk."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + array[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def label_png(labels: np.ndarray, mode: str) -> bytes:
    """A label map as a gray ("L") or palette ("P", VOC-style colours) PNG."""
    image = Image.fromarray(labels.astype(np.uint8), mode="L")
    if mode == "P":
        image = image.convert("P")  # keeps the values as palette indices...
        image.putpalette(list(RNG.integers(0, 256, 768, dtype=np.uint8)))  # ...whatever the colours
    return png_bytes(image)


def write_pair(image_path, label_path, labels, label_mode="L", pixels=None):
    """Writes a JPEG image and its label PNG; returns the JPEG bytes."""
    pixels = random_image(*labels.shape) if pixels is None else pixels
    data = jpeg_bytes(pixels)
    write_bytes(pathlib.Path(image_path), data)
    write_bytes(pathlib.Path(label_path), label_png(labels, label_mode))
    return data


def random_labels(height, width, num_classes, with_ignore=True):
    labels = RNG.integers(0, num_classes, (height, width), dtype=np.uint8)
    if with_ignore:
        labels[0, :3] = 255
    return labels


def decode_record(serialized) -> dict:
    """decode_parsing's fields as numpy values, plus the stored image bytes ("encoded")."""
    record = {key: value.numpy() for key, value in decode_parsing(serialized).items()}
    encoded = tf.io.parse_single_example(serialized, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
    record["encoded"] = encoded["image/encoded"].numpy()
    return record


def read_split(prefix) -> list[dict]:
    """The records of a split in writing order (record i is in shard i mod N)."""
    manifest = read_manifest(str(prefix))
    num_shards = len(manifest["shards"])
    per_shard = [
        [decode_record(serialized) for serialized in tf.data.TFRecordDataset(path)]
        for path in shard_paths(str(prefix), num_shards)
    ]
    return [per_shard[index % num_shards][index // num_shards] for index in range(manifest["num_examples"])]


def filenames(records):
    return [record["image/filename"].decode() for record in records]


# ---------------------------------------------------------------------------------------------------------
# ATR


def make_atr(root: pathlib.Path, ids, label_mode="P", size=(12, 9)):
    expected = {}
    for index, record_id in enumerate(ids):
        labels = random_labels(*size, 18)
        jpeg = write_pair(
            root / "humanparsing" / "JPEGImages" / f"{record_id}.jpg",
            root / "humanparsing" / "SegmentationClassAug" / f"{record_id}.png",
            labels,
            label_mode if index % 2 else "L",
        )
        expected[record_id] = (jpeg, labels)
    return expected


def test_atr_split_sizes():
    assert atr.split_sizes(10000) == [6000, 700, 1000]
    assert atr.split_sizes(7700) == [6000, 700, 1000]
    # the public release's 7024 ATR ids: 5473.25, 638.55, 912.21 -> the spare id goes to val (largest fraction)
    assert atr.split_sizes(7024) == [5473, 639, 912]
    assert atr.split_sizes(12) == [9, 1, 2]  # 9.35, 1.09, 1.56: the remainder goes to the largest fraction
    assert atr.split_sizes(77) == [60, 7, 10]
    assert sum(atr.split_sizes(5)) == 5
    assert atr.split_sizes(7, (3, 2, 2)) == [3, 2, 2]
    with pytest.raises(ValueError):
        atr.split_sizes(5, (0, 0, 0))


def test_atr_id_families():
    families = {
        "dataset10k_1": "dataset10k",
        "dataset10k_10003": "dataset10k",
        "fash_3": "fash",
        "multi_2": "multi",
        "997_10": "997",
        "2500_7": "2500",
        "4565_12": "4565",
        "foo_1": "foo",
        "a_b_12": "a_b",  # the prefix ends at the last _<digits>
        "123": None,
        "multi_": None,
        "multi_2a": None,
    }
    assert {record_id: atr.id_family(record_id) for record_id in families} == families
    with pytest.raises(ValueError, match="unknown_ids"):
        atr.classify_ids(["multi_1"], unknown_ids="keep")


# The full public release's ids, as reported by users of the release: 7024 ATR ids in four families, the
# Chictopia10k ids and Fashionista's 685.
RELEASE_FAMILIES = {"multi": 436, "997": 810, "2500": 2476, "4565": 3302, "dataset10k": 10003, "fash": 685}


def in_split_order(ids):
    """The documented order of the cut (docs/reproduce.md#atr-split): by the SHA-1 hex digest of the id."""
    return sorted(ids, key=lambda record_id: hashlib.sha1(record_id.encode()).hexdigest())


def test_atr_plan_splits_on_the_full_release_scheme():
    ids = [f"{family}_{number}" for family, count in RELEASE_FAMILIES.items() for number in range(1, count + 1)]
    splits, info = atr.plan_splits(reversed(ids))
    atr_ids = [record_id for record_id in ids if record_id.split("_")[0] in ("multi", "997", "2500", "4565")]
    ordered = in_split_order(atr_ids)
    assert [len(splits[name]) for name in ("train", "val", "test")] == [5473, 639, 912]
    assert splits["train"] == ordered[:5473]
    assert splits["val"] == ordered[5473:6112]
    assert splits["test"] == ordered[6112:]
    for name in ("train", "val", "test"):  # the point of the hash order: no family is confined to one split
        assert {record_id.split("_")[0] for record_id in splits[name]} == {"multi", "997", "2500", "4565"}
    family_blocks = {
        family: sorted(f"{family}_{n}" for n in range(1, RELEASE_FAMILIES[family] + 1)) for family in RELEASE_FAMILIES
    }
    assert splits["extra"] == family_blocks["dataset10k"]
    assert info["family_counts"] == {**RELEASE_FAMILIES, "unknown": 0}
    assert info["excluded_ids"] == {"fash": 685}
    assert info["unknown_ids"] == {"handling": "skip", "reasons": {}}


# A few ids of each family of the release, two ids of no known family, and 12 ATR ids (split 9/1/2).
ATR_FIXTURE_IDS = [
    *("multi_2", "multi_10", "multi_1", "997_10", "997_9", "997_1"),
    *("2500_7", "2500_100", "2500_11", "4565_12", "4565_3", "4565_20"),
]
CHICTOPIA_FIXTURE_IDS = ["dataset10k_1", "dataset10k_2", "dataset10k_10"]
OTHER_FIXTURE_IDS = ["fash_3", "fash_40", "foo_1", "123"]
ATR_FIXTURE_SPLITS = {
    "train": in_split_order(ATR_FIXTURE_IDS)[:9],
    "val": in_split_order(ATR_FIXTURE_IDS)[9:10],
    "test": in_split_order(ATR_FIXTURE_IDS)[10:],
}


def test_atr_conversion_labels_split_and_class_info(tmp_path, caplog):
    expected = make_atr(tmp_path / "src", ATR_FIXTURE_IDS + CHICTOPIA_FIXTURE_IDS + OTHER_FIXTURE_IDS)
    with caplog.at_level("INFO", logger="absl"):  # absl's logger: another test may have lowered its level
        results = atr.convert_atr(str(tmp_path / "src"), str(tmp_path / "out"), num_shards=2)
    assert {split: result["written"] for split, result in results.items()} == {"train": 9, "val": 1, "test": 2}
    for split, split_ids in ATR_FIXTURE_SPLITS.items():
        records = read_split(tmp_path / "out" / split)
        assert filenames(records) == [f"{record_id}.jpg" for record_id in split_ids]
        for record, record_id in zip(records, split_ids):
            jpeg, labels = expected[record_id]
            np.testing.assert_array_equal(record["labels"], labels)
            assert record["encoded"] == jpeg  # RGB JPEGs are stored as they are
            assert record["dataset"] == b"atr" and record["split"] == split.encode()
        assert (tmp_path / "out" / f"{split}_ids.txt").read_text().split() == split_ids
        manifest = read_manifest(str(tmp_path / "out" / split))
        assert manifest["class_names"] == list(atr.CLASS_NAMES) and "SHA-1" in manifest["source"]
    # extra (Chictopia10k) is listed but, without write_extra, not written; fash and unknown ids are in no list
    assert (tmp_path / "out" / "extra_ids.txt").read_text().split() == ["dataset10k_1", "dataset10k_10", "dataset10k_2"]
    assert not (tmp_path / "out" / "extra.manifest.json").exists()
    listed = [
        (tmp_path / "out" / f"{split}_ids.txt").read_text().split() for split in ("train", "val", "test", "extra")
    ]
    assert not {"fash_3", "fash_40", "foo_1", "123"} & {record_id for ids in listed for record_id in ids}
    info = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert info["class_names"][9:11] == ["left-shoe", "right-shoe"] and info["num_classes"] == 18
    assert info["left_right_pairs"] == [[9, 10], [12, 13], [14, 15]]
    assert info["flip_permutation"] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 9, 11, 13, 12, 15, 14, 16, 17]
    assert info["splits"]["train"]["written"] == 9 and info["splits"]["extra"]["num_ids"] == 3
    assert info["written_splits"] == ["train", "val", "test"]
    assert info["family_counts"] == {
        "multi": 3,
        "997": 3,
        "2500": 3,
        "4565": 3,
        "dataset10k": 3,
        "fash": 2,
        "unknown": 2,
    }
    assert info["excluded_ids"] == {"fash": 2}
    assert info["unknown_ids"] == {
        "handling": "skip",
        "reasons": {"name not of the form <prefix>_<number>": 1, "prefix of no known family": 1},
    }
    assert "fash (Fashionista) ids excluded" in info["split_rule"]
    # one log line per reason, with the count
    messages = [record.getMessage() for record in caplog.records]
    assert "ATR: 2 fash_* (Fashionista) ids excluded from every split" in "\n".join(messages)
    assert "ATR: 1 ids skipped, prefix of no known family (foo_1)" in messages
    assert "ATR: 1 ids skipped, name not of the form <prefix>_<number> (123)" in messages


def test_atr_extra_is_chictopia_and_unknown_ids_as_atr(tmp_path):
    make_atr(tmp_path / "src", ATR_FIXTURE_IDS + CHICTOPIA_FIXTURE_IDS + OTHER_FIXTURE_IDS)
    results = atr.convert_atr(str(tmp_path / "src"), str(tmp_path / "out"), 1, write_extra=True)
    assert {split: result["written"] for split, result in results.items()} == {
        "train": 9,
        "val": 1,
        "test": 2,
        "extra": 3,
    }
    assert filenames(read_split(tmp_path / "out" / "extra")) == [
        "dataset10k_1.jpg",
        "dataset10k_10.jpg",
        "dataset10k_2.jpg",
    ]
    # --unknown_ids=atr: foo_1 and 123 join the ATR ids (14: split 11/1/2); fash stays out, extra unchanged
    results = atr.convert_atr(str(tmp_path / "src"), str(tmp_path / "out2"), 1, write_extra=True, unknown_ids="atr")
    assert atr.split_sizes(14) == [11, 1, 2]
    ordered = in_split_order(ATR_FIXTURE_IDS + ["foo_1", "123"])
    expected = {
        "train": ordered[:11],
        "val": ordered[11:12],
        "test": ordered[12:],
        "extra": ["dataset10k_1", "dataset10k_10", "dataset10k_2"],
    }
    for split, split_ids in expected.items():
        assert filenames(read_split(tmp_path / "out2" / split)) == [f"{record_id}.jpg" for record_id in split_ids]
        assert (tmp_path / "out2" / f"{split}_ids.txt").read_text().split() == split_ids
    info = json.loads((tmp_path / "out2" / "classes.json").read_text())
    assert info["unknown_ids"]["handling"] == "atr" and info["excluded_ids"] == {"fash": 2}
    assert info["family_counts"]["unknown"] == 2


def test_atr_explicit_split_sizes_and_extra(tmp_path):
    ids = ["2500_1", "2500_2", "4565_1", "4565_2", "997_1", "997_2", "997_3", "multi_1", "multi_2", "dataset10k_5"]
    make_atr(tmp_path / "src", ids)
    results = atr.convert_atr(str(tmp_path / "src"), str(tmp_path / "out"), 1, sizes=(3, 2, 2), write_extra=True)
    assert {split: result["written"] for split, result in results.items()} == {
        "train": 3,
        "val": 2,
        "test": 2,
        "extra": 3,
    }
    ordered = in_split_order(ids[:-1])
    assert filenames(read_split(tmp_path / "out" / "train")) == [f"{record_id}.jpg" for record_id in ordered[:3]]
    assert filenames(read_split(tmp_path / "out" / "test")) == [f"{record_id}.jpg" for record_id in ordered[5:7]]
    # the ATR ids beyond explicitly requested sizes are training-only data too: extra, sorted with Chictopia10k
    extra = sorted(["dataset10k_5", *ordered[7:]])
    assert filenames(read_split(tmp_path / "out" / "extra")) == [f"{record_id}.jpg" for record_id in extra]
    results = atr.convert_atr(str(tmp_path / "src"), str(tmp_path / "out2"), 1, sizes=(3, 2, 2))
    assert "extra" not in results and not (tmp_path / "out2" / "extra.manifest.json").exists()
    assert json.loads((tmp_path / "out2" / "classes.json").read_text())["splits"]["extra"]["num_ids"] == 3


def test_atr_rerun_gives_identical_shards(tmp_path):
    make_atr(tmp_path / "src", [f"{family}_{number}" for family in ("997", "multi") for number in range(1, 6)])
    for out in ("a", "b"):
        atr.convert_atr(str(tmp_path / "src"), str(tmp_path / out), num_shards=3)
    for split in ("train", "val", "test"):
        for path_a, path_b in zip(
            shard_paths(str(tmp_path / "a" / split), 3), shard_paths(str(tmp_path / "b" / split), 3)
        ):
            assert pathlib.Path(path_a).read_bytes() == pathlib.Path(path_b).read_bytes()


def test_atr_missing_folders_raise(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(FileNotFoundError, match="SegmentationClassAug"):
        atr.convert_atr(str(tmp_path), str(tmp_path / "out"))


# ---------------------------------------------------------------------------------------------------------
# LIP and CIHP


def test_lip_conversion_follows_id_lists(tmp_path):
    src = tmp_path / "LIP"
    expected = {}
    listed = {"train": ["77_3", "5_1", "100034_483681"], "val": ["9_9", "10_2"]}
    for split, ids in listed.items():
        for record_id in ids:
            labels = random_labels(10, 7, 20)
            labels[1, 1], labels[2, 2] = 19, 14
            expected[record_id] = (
                write_pair(
                    src / "TrainVal_images" / f"{split}_images" / f"{record_id}.jpg",
                    src / "TrainVal_parsing_annotations" / f"{split}_segmentations" / f"{record_id}.png",
                    labels,
                ),
                labels,
            )
        (src / "TrainVal_images" / f"{split}_id.txt").write_text("\n".join(ids) + "\n")
    results = lip.convert_lip(str(src), str(tmp_path / "out"), "lip", num_shards=2)
    assert {split: result["written"] for split, result in results.items()} == {"train": 3, "val": 2}
    for split, ids in listed.items():
        records = read_split(tmp_path / "out" / split)
        assert filenames(records) == [f"{record_id}.jpg" for record_id in ids]  # id-file order, not sorted
        for record, record_id in zip(records, ids):
            np.testing.assert_array_equal(record["labels"], expected[record_id][1])
            assert record["encoded"] == expected[record_id][0] and record["dataset"] == b"lip"
    info = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert info["class_names"] == list(defaults.LIP_CLASSES) and len(info["class_names"]) == 20
    assert info["left_right_pairs"] == [[14, 15], [16, 17], [18, 19]]
    assert info["flip_permutation"][14:] == [15, 14, 17, 16, 19, 18]
    assert lip.LEFT_RIGHT_PAIRS == ((14, 15), (16, 17), (18, 19))


def test_cihp_conversion_and_missing_id_file(tmp_path):
    src = tmp_path / "instance-level_human_parsing"
    expected = {}
    for folder, ids in (("Training", ["0002", "0001"]), ("Validation", ["0011", "0010"])):
        for record_id in ids:
            labels = random_labels(8, 6, 20)
            write_pair(
                src / folder / "Images" / f"{record_id}.jpg",
                src / folder / "Category_ids" / f"{record_id}.png",
                labels,
                "P",
            )
            expected[record_id] = labels
    (src / "Training" / "train_id.txt").write_text("0002\n0001\n")  # Validation has no val_id.txt
    results = lip.convert_lip(str(tmp_path), str(tmp_path / "out"), "cihp", num_shards=1)
    assert {split: result["written"] for split, result in results.items()} == {"train": 2, "val": 2}
    train, val = read_split(tmp_path / "out" / "train"), read_split(tmp_path / "out" / "val")
    assert filenames(train) == ["0002.jpg", "0001.jpg"] and filenames(val) == ["0010.jpg", "0011.jpg"]
    for record in train + val:
        np.testing.assert_array_equal(record["labels"], expected[record["image/filename"].decode()[:-4]])
        assert record["dataset"] == b"cihp"
    info = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert "no val_id.txt" in info["sources"]["val"]
    with pytest.raises(ValueError, match="dataset must be"):
        lip.convert_lip(str(tmp_path), str(tmp_path / "x"), "atr")


# ---------------------------------------------------------------------------------------------------------
# Bad input (ATR and LIP layouts): each case is skipped, or converted, as the rules say


# Ids in the release's scheme (an ATR family), so that the converter takes them into train.
GOOD_ATR_IDS = ["multi_1", "multi_2"]
BAD_ATR_ID = "multi_3"


def bad_input_atr(tmp_path, name, write_bad):
    """Two good ATR samples plus one written by `write_bad(image_path, label_path)`; returns (manifest, records)."""
    root = tmp_path / "src"
    good = make_atr(root, GOOD_ATR_IDS, size=(8, 6))
    write_bad(
        root / "humanparsing" / "JPEGImages" / f"{name}.jpg",
        root / "humanparsing" / "SegmentationClassAug" / f"{name}.png",
    )
    atr.convert_atr(str(root), str(tmp_path / "out"), 1, sizes=(10, 0, 0))
    return read_manifest(str(tmp_path / "out" / "train")), read_split(tmp_path / "out" / "train"), good


def assert_skipped(manifest, records, name, reason_part, good):
    assert sum(manifest["skipped"].values()) == 1 and len(manifest["skipped_records"]) == 1
    assert manifest["skipped_records"][0]["record"] == name and reason_part in manifest["skipped_records"][0]["reason"]
    assert manifest["num_examples"] == 2 and sorted(filenames(records)) == [
        f"{record_id}.jpg" for record_id in GOOD_ATR_IDS
    ]
    for record in records:
        np.testing.assert_array_equal(record["labels"], good[record["image/filename"].decode()[:-4]][1])


def test_bad_input_corrupt_image_is_skipped(tmp_path):
    def write(image_path, label_path):
        write_bytes(image_path, b"\xff\xd8\xff\xe0 definitely not a jpeg")
        write_bytes(label_path, label_png(np.zeros((8, 6), np.uint8), "L"))

    manifest, records, good = bad_input_atr(tmp_path, BAD_ATR_ID, write)
    assert_skipped(manifest, records, BAD_ATR_ID, "corrupt or truncated image", good)


def test_bad_input_truncated_image_is_skipped(tmp_path):
    def write(image_path, label_path):
        data = jpeg_bytes(RNG.integers(0, 256, (8, 6, 3), dtype=np.uint8))
        write_bytes(image_path, data[: len(data) // 2])
        write_bytes(label_path, label_png(np.zeros((8, 6), np.uint8), "L"))

    manifest, records, good = bad_input_atr(tmp_path, BAD_ATR_ID, write)
    assert_skipped(manifest, records, BAD_ATR_ID, "corrupt or truncated image", good)


@pytest.mark.parametrize("kind", ["grayscale", "rgba", "16bit", "16bit_rgb"])
def test_bad_input_converted_images_are_kept(tmp_path, kind):
    labels = random_labels(8, 6, 18)
    gray = RNG.integers(0, 256, (8, 6), dtype=np.uint8)
    rgba = RNG.integers(0, 256, (8, 6, 4), dtype=np.uint8)
    deep = RNG.integers(0, 65536, (8, 6), dtype=np.uint16)
    deep[0, 0] = 65535
    if kind == "grayscale":
        data = jpeg_bytes(gray)
        expected = np.repeat(np.asarray(Image.open(io.BytesIO(data)).convert("L"))[..., None], 3, -1)
    elif kind == "rgba":
        data, expected = png_bytes(Image.fromarray(rgba, mode="RGBA")), rgba[..., :3]
    elif kind == "16bit_rgb":
        deep_rgb = RNG.integers(0, 65536, (8, 6, 3), dtype=np.uint16)
        data, expected = png16_rgb_bytes(deep_rgb), (deep_rgb >> 8).astype(np.uint8)  # the high bytes
    else:
        data = png_bytes(Image.fromarray(deep))  # a 16-bit gray PNG
        assert Image.open(io.BytesIO(data)).mode.startswith("I")
        scaled = np.round(deep.astype(np.float64) * 255 / 65535).astype(np.uint8)
        expected = np.repeat(scaled[..., None], 3, -1)

    def write(image_path, label_path):
        write_bytes(image_path, data)
        write_bytes(label_path, label_png(labels, "P"))

    manifest, records, _ = bad_input_atr(tmp_path, BAD_ATR_ID, write)
    assert manifest["skipped"] == {} and manifest["num_examples"] == 3
    record = records[filenames(records).index(f"{BAD_ATR_ID}.jpg")]
    np.testing.assert_array_equal(record["image"], expected)
    np.testing.assert_array_equal(record["labels"], labels)


def test_bad_input_size_mismatch_is_skipped(tmp_path):
    def write(image_path, label_path):
        write_pair(image_path, label_path, np.zeros((7, 6), np.uint8), pixels=random_image(8, 6))

    manifest, records, good = bad_input_atr(tmp_path, BAD_ATR_ID, write)
    assert_skipped(manifest, records, BAD_ATR_ID, "label map size differs from image: label map 7x6, image 8x6", good)


def test_bad_input_out_of_range_label_is_skipped_naming_the_ids(tmp_path):
    def write(image_path, label_path):
        labels = random_labels(8, 6, 18)
        labels[3, 3], labels[4, 4], labels[5, 5] = 18, 40, 255  # 255 alone would be fine
        write_pair(image_path, label_path, labels)

    manifest, records, good = bad_input_atr(tmp_path, BAD_ATR_ID, write)
    assert_skipped(manifest, records, BAD_ATR_ID, "ids [18, 40]", good)


def test_bad_input_rgb_label_map_is_skipped(tmp_path):
    def write(image_path, label_path):
        write_bytes(image_path, jpeg_bytes(random_image(8, 6)))
        write_bytes(label_path, png_bytes(Image.fromarray(random_image(8, 6))))

    manifest, records, good = bad_input_atr(tmp_path, BAD_ATR_ID, write)
    assert_skipped(manifest, records, BAD_ATR_ID, "single-channel PNG", good)


@pytest.mark.parametrize("missing", ["image", "label"])
def test_bad_input_missing_file_is_skipped(tmp_path, missing):
    def write(image_path, label_path):
        if missing == "label":
            write_bytes(image_path, jpeg_bytes(random_image(8, 6)))
        else:
            write_bytes(label_path, label_png(np.zeros((8, 6), np.uint8), "L"))

    manifest, records, good = bad_input_atr(tmp_path, BAD_ATR_ID, write)
    reason = "missing image file" if missing == "image" else "missing label map file"
    assert_skipped(manifest, records, BAD_ATR_ID, reason, good)


def test_bad_input_listed_but_missing_and_repeated_lip_ids(tmp_path):
    src = tmp_path / "LIP"
    labels = random_labels(6, 5, 20)
    for split in ("train", "val"):
        write_pair(src / f"{split}_images" / "1_1.jpg", src / f"{split}_segmentations" / "1_1.png", labels)
        (src / f"{split}_id.txt").write_text("1_1\nghost\n1_1\n")
    results = lip.convert_lip(str(src), str(tmp_path / "out"), "lip", 1)
    assert results["train"] == {"written": 1, "skipped": 2, "manifest": str(tmp_path / "out" / "train.manifest.json")}
    manifest = read_manifest(str(tmp_path / "out" / "train"))
    reasons = {record["record"]: record["reason"] for record in manifest["skipped_records"]}
    assert "missing image file" in reasons["ghost"] and "listed twice" in reasons["1_1"]
    np.testing.assert_array_equal(read_split(tmp_path / "out" / "train")[0]["labels"], labels)


# ---------------------------------------------------------------------------------------------------------
# Fashionista

H, W = 60, 40
# 0-based (x, y) joints of a frontal person; the person's right side is on the image's left.
JOINTS = {
    "right_ankle": (15, 56),
    "right_knee": (15, 45),
    "right_hip": (16, 32),
    "left_hip": (24, 32),
    "left_knee": (25, 45),
    "left_ankle": (25, 56),
    "right_hand": (6, 32),
    "right_elbow": (8, 24),
    "right_shoulder": (12, 14),
    "left_shoulder": (28, 14),
    "left_elbow": (32, 24),
    "left_hand": (34, 32),
    "neck": (20, 12),
    "head": (20, 5),
}
POSE_POINT = np.array([JOINTS[name] for name in fashionista.POSE_JOINTS], np.float64) + 1.0  # MATLAB 1-based
# (rows, cols, Fashionista name, ATR id with sides from the pose, ATR id with --sides=ignore); the rest is null.
REGIONS = [
    ((0, 2), (15, 26), "hair", 2, 2),
    ((2, 9), (17, 24), "skin", 11, 255),  # around the head: face
    ((12, 15), (18, 23), "necklace", 255, 255),
    ((15, 31), (14, 27), "t-shirt", 4, 4),
    ((29, 35), (4, 9), "skin", 15, 255),  # the person's right hand: right-arm
    ((29, 35), (32, 37), "gloves", 14, 255),  # left hand: left-arm
    ((31, 41), (14, 27), "skirt", 5, 5),
    ((36, 43), (30, 38), "purse", 16, 16),
    ((42, 53), (13, 18), "stockings", 13, 255),  # right leg
    ((42, 53), (23, 28), "skin", 12, 255),  # left leg
    ((44, 47), (0, 4), "suit", 255, 255),
    ((54, 60), (12, 18), "boots", 10, 255),  # right foot: right-shoe
    ((54, 60), (22, 29), "sneakers", 9, 255),  # left foot: left-shoe
    ((8, 12), (33, 38), "glasses", 3, 3),
    ((0, 5), (0, 6), "romper", 7, 7),
]


def region_maps(sides: bool):
    """(superpixel map, 1-based ids, 1-based superpixel labels, expected ATR labels) of REGIONS."""
    names = list(fashionista.FASHIONISTA_LABELS)
    superpixels = np.ones((H, W), np.int64)  # superpixel 1: null
    superpixel_labels = [names.index("null") + 1]
    expected = np.zeros((H, W), np.uint8)
    for index, ((r0, r1), (c0, c1), name, with_pose, ignored) in enumerate(REGIONS):
        # two superpixels per region (left and right halves), both with the region's label
        middle = (c0 + c1) // 2
        superpixels[r0:r1, c0:middle] = len(superpixel_labels) + 1
        superpixels[r0:r1, middle:c1] = len(superpixel_labels) + 2
        superpixel_labels += [names.index(name) + 1] * 2
        expected[r0:r1, c0:c1] = with_pose if sides else ignored
    return superpixels, np.array(superpixel_labels, np.float64), expected


def sample_struct(index, image_bytes, superpixel_png, superpixel_labels, labels=None, pose=POSE_POINT):
    return {
        "index": float(index),
        "url": f"http://example.com/{index}.jpg",
        "image": np.frombuffer(image_bytes, np.uint8).reshape(-1, 1),
        "pose": {"point": pose if pose is not None else np.zeros((0, 0)), "score": 1.0},
        "annotation": {
            "superpixel_map": np.frombuffer(superpixel_png, np.uint8).reshape(-1, 1),
            "superpixel_labels": np.asarray(superpixel_labels, np.float64).reshape(-1, 1),
            "labels": np.array(labels or list(fashionista.FASHIONISTA_LABELS), dtype=object).reshape(-1, 1),
            "marginals": np.zeros((0, 0)),
        },
        "id": float(1000 + index),
    }


def write_fashionista(path, samples, test_index):
    fields = ["index", "url", "image", "pose", "annotation", "id"]
    truths = np.zeros((1, len(samples)), dtype=[(field, object) for field in fields])
    for position, sample in enumerate(samples):
        for field in fields:
            truths[0, position][field] = sample[field]
    scipy_io.savemat(str(path), {"truths": truths, "test_index": np.array(test_index, np.float64).reshape(1, -1)})


def fashionista_fixture(tmp_path):
    superpixels, superpixel_labels, expected_pose = region_maps(sides=True)
    _, _, expected_ignore = region_maps(sides=False)
    sp_png8 = png_bytes(Image.fromarray(superpixels.astype(np.uint8), mode="L"))
    images = [random_image(H, W), np.roll(random_image(H, W), 5, axis=1)]
    samples, expected = [], {}
    # 1: RGB JPEG, 8-bit superpixel map
    samples.append(sample_struct(1, jpeg_bytes(images[0]), sp_png8, superpixel_labels))
    expected[1] = (expected_pose, expected_ignore)
    # 2: grayscale JPEG, 16-bit superpixel map with > 255 superpixels (every pixel its own)
    unique = np.arange(1, H * W + 1, dtype=np.uint16).reshape(H, W)
    per_pixel_labels = superpixel_labels[superpixels - 1].reshape(-1)
    samples.append(
        sample_struct(2, jpeg_bytes(images[1][..., 0]), png_bytes(Image.fromarray(unique)), per_pixel_labels)
    )
    expected[2] = (expected_pose, expected_ignore)
    # 3: no pose: the side-dependent pixels are 255 either way
    samples.append(sample_struct(3, jpeg_bytes(images[0]), sp_png8, superpixel_labels, pose=None))
    expected[3] = (expected_ignore, expected_ignore)
    # 4: a superpixel label pointing past the 56 names: skipped
    bad_labels = superpixel_labels.copy()
    bad_labels[1] = 57
    samples.append(sample_struct(4, jpeg_bytes(images[0]), sp_png8, bad_labels))
    # 5: a label name that is not in the mapping, used by a pixel: skipped, naming it
    renamed = list(fashionista.FASHIONISTA_LABELS)
    renamed[renamed.index("hair")] = "mystery"
    samples.append(sample_struct(5, jpeg_bytes(images[0]), sp_png8, superpixel_labels, labels=renamed))
    # 6: superpixel map of another size than the image: skipped
    samples.append(sample_struct(6, jpeg_bytes(images[0][:50]), sp_png8, superpixel_labels))
    path = tmp_path / "fashionista_v0.2.1.mat"
    write_fashionista(path, samples, test_index=[2, 5])
    return path, samples, expected


def test_fashionista_mapping_covers_the_56_names():
    assert len(fashionista.FASHIONISTA_LABELS) == 56 and fashionista.FASHIONISTA_LABELS[0] == "null"
    assert set(fashionista.FASHIONISTA_TO_ATR) == set(fashionista.FASHIONISTA_LABELS)
    targets = set(fashionista.FASHIONISTA_TO_ATR.values())
    side = {fashionista.SKIN, fashionista.FOOTWEAR, fashionista.LEGWEAR, fashionista.HANDWEAR, fashionista.IGNORE}
    assert targets - side <= set(defaults.ATR_CLASSES)
    # every ATR class is reachable (face/arms/legs/shoes through the pose)
    reachable = (targets - side) | {
        name for key in side - {fashionista.IGNORE} for name in fashionista.SIDE_CANDIDATES[key]
    }
    assert reachable == set(defaults.ATR_CLASSES)
    assert (
        fashionista.FASHIONISTA_TO_ATR["null"] == "background"
        and fashionista.FASHIONISTA_TO_ATR["skin"] == fashionista.SKIN
    )


@pytest.mark.parametrize("sides", ["pose", "ignore"])
def test_fashionista_conversion(tmp_path, sides):
    path, samples, expected = fashionista_fixture(tmp_path)
    results = fashionista.convert_fashionista(str(path), str(tmp_path / "out"), num_shards=2, sides=sides)
    assert results["train"]["written"] == 2 and results["train"]["skipped"] == 2  # 1, 3 written; 4, 6 skipped
    assert results["test"]["written"] == 1 and results["test"]["skipped"] == 1  # 2 written; 5 skipped
    train, test = read_split(tmp_path / "out" / "train"), read_split(tmp_path / "out" / "test")
    assert filenames(train) == ["fashionista_0001.jpg", "fashionista_0003.jpg"] and filenames(test) == [
        "fashionista_0002.jpg"
    ]
    for record in train + test:
        index = int(record["image/filename"].decode()[12:16])
        np.testing.assert_array_equal(record["labels"], expected[index][0 if sides == "pose" else 1])
        assert record["dataset"] == b"fashionista"
    assert train[0]["encoded"] == samples[0]["image"].tobytes()  # the RGB JPEG bytes as they are
    gray = np.asarray(Image.open(io.BytesIO(samples[1]["image"].tobytes())).convert("RGB"))
    np.testing.assert_array_equal(test[0]["image"], gray)  # grayscale JPEG: converted to RGB (PNG)
    reasons = {r["record"]: r["reason"] for r in read_manifest(str(tmp_path / "out" / "train"))["skipped_records"]}
    assert "superpixel labels [57] outside 1-56" in reasons["truths(4)"]
    assert "label map 60x40, image 50x40" in reasons["truths(6)"]
    test_reasons = read_manifest(str(tmp_path / "out" / "test"))["skipped_records"]
    assert test_reasons[0]["record"] == "truths(5)" and "['mystery']" in test_reasons[0]["reason"]
    info = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert info["class_names"] == list(defaults.ATR_CLASSES) and info["left_right_pairs"] == [
        [9, 10],
        [12, 13],
        [14, 15],
    ]
    assert info["fashionista"]["sides"] == sides and info["fashionista"]["mapping"]["jeans"] == "pants"
    assert info["fashionista"]["pose_missing"] == (["truths(3)"] if sides == "pose" else [])


def test_fashionista_single_sample_and_errors(tmp_path):
    superpixels, superpixel_labels, expected = region_maps(sides=True)
    sp_png = png_bytes(Image.fromarray(superpixels.astype(np.uint8), mode="L"))
    path = tmp_path / "one.mat"
    write_fashionista(
        path, [sample_struct(1, jpeg_bytes(random_image(H, W)), sp_png, superpixel_labels)], test_index=[1]
    )
    results = fashionista.convert_fashionista(str(path), str(tmp_path / "out"), 1)
    assert results["test"]["written"] == 1 and results["train"]["written"] == 0
    np.testing.assert_array_equal(read_split(tmp_path / "out" / "test")[0]["labels"], expected)
    write_fashionista(
        path, [sample_struct(1, jpeg_bytes(random_image(H, W)), sp_png, superpixel_labels)], test_index=[2]
    )
    with pytest.raises(ValueError, match="test_index holds indices outside 1-1"):
        fashionista.convert_fashionista(str(path), str(tmp_path / "out2"), 1)
    hdf5 = tmp_path / "v73.mat"
    hdf5.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(512, b" ") + b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(ValueError, match="v7.3"):
        fashionista.convert_fashionista(str(hdf5), str(tmp_path / "out3"), 1)
    with pytest.raises(ValueError, match="sides must be"):
        fashionista.convert_fashionista(str(path), str(tmp_path / "out4"), 1, sides="left")


# ---------------------------------------------------------------------------------------------------------
# PASCAL-Part Horse-Cow


def rect(shape, r0, r1, c0, c1):
    mask = np.zeros(shape, np.uint8)
    mask[r0:r1, c0:c1] = 1
    return mask


def struct_array(items, fields):
    array = np.zeros((1, len(items)), dtype=[(field, object) for field in fields])
    for position, item in enumerate(items):
        for field in fields:
            array[0, position][field] = item[field]
    return array


def write_annotation(path, objects):
    """Annotations_Part/<id>.mat: anno.imname, anno.objects(k).{class, class_ind, mask, parts(p).{part_name, mask}}."""
    rows = []
    for obj in objects:
        parts = obj["parts"]
        rows.append(
            {
                "class": obj["class"],
                "class_ind": float(obj.get("class_ind", 13)),
                "mask": obj["mask"],
                "parts": struct_array(parts, ["part_name", "mask"]) if parts else np.zeros((0, 0)),
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    anno = {"imname": path.stem, "objects": struct_array(rows, ["class", "class_ind", "mask", "parts"])}
    scipy_io.savemat(str(path), {"anno": anno})


def pascal_fixture(root):
    shape = (30, 40)
    horse_a = {
        "class": "horse",
        "mask": rect(shape, 2, 24, 2, 22),  # silhouette; parts leave some of it uncovered
        "parts": [
            {"part_name": "head", "mask": rect(shape, 2, 8, 2, 8)},
            {"part_name": "leye", "mask": rect(shape, 3, 4, 3, 4)},
            {"part_name": "neck", "mask": rect(shape, 6, 10, 6, 10)},  # overlaps head: head wins
            {"part_name": "torso", "mask": rect(shape, 8, 16, 6, 20)},
            {"part_name": "lfuleg", "mask": rect(shape, 14, 20, 7, 9)},  # overlaps torso: leg wins
            {"part_name": "lfho", "mask": rect(shape, 20, 22, 7, 9)},
            {"part_name": "tail", "mask": rect(shape, 9, 13, 19, 21)},  # overlaps torso: tail wins
            {"part_name": "saddle", "mask": rect(shape, 7, 9, 12, 16)},  # unknown name: 255 outside known parts
        ],
    }
    horse_b = {
        "class": "horse",
        "mask": rect(shape, 20, 30, 26, 40),
        "parts": [
            {"part_name": "muzzle", "mask": rect(shape, 20, 23, 26, 30)},
            {"part_name": "rblleg", "mask": rect(shape, 25, 30, 30, 32)},
            {"part_name": "rbho", "mask": rect(shape, 29, 30, 30, 32)},
        ],
    }
    person = {
        "class": "person",
        "class_ind": 15,
        "mask": rect(shape, 0, 12, 24, 34),
        "parts": [
            {"part_name": "head", "mask": rect(shape, 0, 3, 26, 30)},
        ],
    }

    def expected(unlabelled):
        labels = np.zeros(shape, np.uint8)
        labels[2:24, 2:22] = unlabelled
        labels[20:30, 26:40] = unlabelled
        labels[7:9, 12:16] = 255  # saddle
        labels[8:16, 6:20] = 2  # torso
        labels[6:10, 6:10] = 2  # neck
        labels[2:8, 2:8] = 1  # head (+ leye)
        labels[14:22, 7:9] = 3  # leg + hoof
        labels[9:13, 19:21] = 4  # tail
        labels[20:23, 26:30] = 1  # horse b muzzle
        labels[25:30, 30:32] = 3  # horse b leg
        return labels

    write_annotation(root / "Annotations_Part" / "2008_000001.mat", [person, horse_a, horse_b])
    write_bytes(root / "VOC2010" / "JPEGImages" / "2008_000001.jpg", jpeg_bytes(random_image(*shape)))
    # a single cow with a single part (squeezed to scalars by loadmat)
    cow = {
        "class": "cow",
        "mask": rect((20, 16), 5, 15, 2, 14),
        "parts": [{"part_name": "rhorn", "mask": rect((20, 16), 5, 7, 2, 4)}],
    }
    write_annotation(root / "Annotations_Part" / "2009_000002.mat", [cow])
    write_bytes(root / "VOC2010" / "JPEGImages" / "2009_000002.jpg", jpeg_bytes(random_image(20, 16)))
    cow_expected = np.zeros((20, 16), np.uint8)
    cow_expected[5:7, 2:4] = 1
    # a person only
    write_annotation(root / "Annotations_Part" / "2009_000003.mat", [person])
    write_bytes(root / "VOC2010" / "JPEGImages" / "2009_000003.jpg", jpeg_bytes(random_image(*shape)))
    # masks of another size than the image
    write_annotation(root / "Annotations_Part" / "2009_000004.mat", [horse_b])
    write_bytes(root / "VOC2010" / "JPEGImages" / "2009_000004.jpg", jpeg_bytes(random_image(31, 40)))
    # an object without parts
    write_annotation(
        root / "Annotations_Part" / "2009_000005.mat",
        [{"class": "cow", "mask": rect((10, 10), 2, 8, 2, 8), "parts": []}],
    )
    write_bytes(root / "VOC2010" / "JPEGImages" / "2009_000005.jpg", jpeg_bytes(random_image(10, 10)))
    (root / "train.txt").write_text("2008_000001\n2009_000003\n2009_000002 1\n# comment\n2008_000001\n")
    (root / "test.txt").write_text("2009_000004\n2009_000005\n2009_000099\n")
    return expected, cow_expected


@pytest.mark.parametrize("unlabelled", ["background", "ignore"])
def test_pascal_part_merge(tmp_path, unlabelled):
    root = tmp_path / "src"
    expected, cow_expected = pascal_fixture(root)
    results = pascal_part.convert_pascal_part(
        str(root),
        str(root / "VOC2010"),
        str(tmp_path / "out"),
        {"train": str(root / "train.txt"), "test": str(root / "test.txt")},
        classes=("horse", "cow"),
        num_shards=2,
        unlabelled_silhouette=unlabelled,
    )
    value = 0 if unlabelled == "background" else 255
    assert results["train"]["written"] == 2 and results["train"]["skipped"] == 2  # person-only, repeated id
    assert results["test"]["written"] == 1 and results["test"]["skipped"] == 2  # size mismatch, missing
    train = read_split(tmp_path / "out" / "train")
    assert filenames(train) == ["2008_000001.jpg", "2009_000002.jpg"]
    np.testing.assert_array_equal(train[0]["labels"], expected(value))
    cow = cow_expected.copy()
    cow[(cow == 0) & (rect((20, 16), 5, 15, 2, 14) > 0)] = value
    np.testing.assert_array_equal(train[1]["labels"], cow)
    test = read_split(tmp_path / "out" / "test")
    np.testing.assert_array_equal(test[0]["labels"], np.pad(np.full((6, 6), value, np.uint8), 2))
    reasons = {r["record"]: r["reason"] for r in read_manifest(str(tmp_path / "out" / "train"))["skipped_records"]}
    assert "no horse/cow object" in reasons["2009_000003"] and "listed twice" in reasons["2008_000001"]
    reasons = {r["record"]: r["reason"] for r in read_manifest(str(tmp_path / "out" / "test"))["skipped_records"]}
    assert "label map 30x40, image 31x40" in reasons["2009_000004"]
    assert "missing annotation file" in reasons["2009_000099"]
    info = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert info["class_names"] == ["background", "head", "body", "leg", "tail"] and info["left_right_pairs"] == []
    assert info["pascal_part"]["unknown_part_names"] == {"saddle": 1}


def test_pascal_part_class_selection(tmp_path):
    root = tmp_path / "src"
    expected, _ = pascal_fixture(root)
    results = pascal_part.convert_pascal_part(
        str(root),
        str(root / "VOC2010"),
        str(tmp_path / "out"),
        {"train": str(root / "train.txt")},
        classes=("cow",),
        num_shards=1,
    )
    # with cow only, the horses are background and 2008_000001 has no cow: skipped
    assert results["train"]["written"] == 1 and results["train"]["skipped"] == 3
    assert filenames(read_split(tmp_path / "out" / "train")) == ["2009_000002.jpg"]
    with pytest.raises(ValueError, match="unlabelled_silhouette"):
        pascal_part.convert_pascal_part(
            str(root), str(root), str(tmp_path / "x"), {"train": "t"}, unlabelled_silhouette="x"
        )


# ---------------------------------------------------------------------------------------------------------
# Command lines


def run_module(*args):
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def test_command_lines_help_and_run(tmp_path):
    # --help prints the module docstring (absl's usage), which says where to download the data
    for module, url_part in (
        (atr, "HumanParsing-Dataset"),
        (lip, "sysu-hcp.net/lip"),
        (fashionista, "clothing_parsing"),
        (pascal_part, "pascal-parts"),
    ):
        assert url_part in module.__doc__, module.__name__
    done = run_module("data_tools.pascal_part", "--help")  # absl exits with 1 after --help
    assert (
        "roozbehm.info/pascal-parts" in done.stdout
        and "--unlabelled_silhouette" in done.stdout
        and "--output_dir" in done.stdout
    )
    src = tmp_path / "LIP"
    labels = random_labels(6, 5, 20)
    for split in ("train", "val"):
        write_pair(src / f"{split}_images" / "1_1.jpg", src / f"{split}_segmentations" / "1_1.png", labels)
        (src / f"{split}_id.txt").write_text("1_1\n")
    done = run_module(
        "data_tools.lip", "--dataset=lip", f"--data_dir={src}", f"--output_dir={tmp_path / 'out'}", "--num_shards=1"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train: 1 written, 0 skipped" in done.stdout
    np.testing.assert_array_equal(read_split(tmp_path / "out" / "val")[0]["labels"], labels)
