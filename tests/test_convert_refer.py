"""data_tools.refer (RefCOCO/RefCOCO+/RefCOCOg) and data_tools.restricted_pickle on fixtures in the REFER format."""

import io
import json
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pycocotools import mask as coco_mask

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

from data_tools import refer  # noqa: E402
from data_tools.restricted_pickle import RestrictedPickleError, load_restricted_pickle, loads_restricted_pickle  # noqa: E402
from tf_recurrent_seg.data.records import REFERRING_FEATURES, decode_referring, read_manifest  # noqa: E402

RNG = np.random.default_rng(7)

# Two overlapping squares: the overlap [10, 20) x [10, 20) must count once (union), not twice (sum).
POLYGONS = [[2.0, 2.0, 20.0, 2.0, 20.0, 20.0, 2.0, 20.0], [10.0, 10.0, 35.0, 10.0, 35.0, 28.0, 10.0, 28.0]]


def _pixels(height, width, channels=3):
    return RNG.integers(0, 256, size=(height, width, channels), dtype=np.uint8)


def _save(array, path, format, mode=None):
    Image.fromarray(array, mode=mode).save(path, format=format) if mode else Image.fromarray(array).save(
        path, format=format
    )


def _uncompressed_counts(mask):
    """COCO uncompressed RLE counts of a (h, w) 0/1 mask: column-major runs, starting with a run of zeros."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return counts


def _sentence(sent_id, sent, raw=None):
    return {
        "raw": raw if raw is not None else sent.capitalize() + ".",
        "sent": sent,
        "sent_id": sent_id,
        "tokens": sent.split(),
    }


def _ref(ref_id, ann_id, image_id, split, sentences):
    return {
        "ref_id": ref_id,
        "ann_id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "split": split,
        "sent_ids": [s["sent_id"] for s in sentences],
        "sentences": sentences,
        # REFER's ref file_name carries the ann id and is not the image's name (the API ignores it).
        "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
    }


@pytest.fixture
def refer_data(tmp_path):
    """A REFER root (refcoco, unc) with three images and three refs; returns a dict describing it."""
    root, image_dir = tmp_path / "refer", tmp_path / "train2014"
    (root / "refcoco").mkdir(parents=True)
    image_dir.mkdir()
    sizes = {1: (30, 40), 2: (24, 36), 3: (32, 32)}
    names = {
        1: "COCO_train2014_000000000001.jpg",
        2: "COCO_train2014_000000000002.png",
        3: "COCO_train2014_000000000003.jpg",
    }
    for image_id, (height, width) in sizes.items():
        _save(_pixels(height, width), image_dir / names[image_id], "JPEG" if names[image_id].endswith("jpg") else "PNG")

    rle_mask = np.zeros(sizes[2], np.uint8)
    rle_mask[3:15, 5:30] = 1
    rle_mask[18:20, 0:3] = 1
    compressed_mask = np.zeros(sizes[3], np.uint8)
    compressed_mask[4:28, 6:9] = 1
    compressed_mask[10:12, :] = 1
    compressed = coco_mask.encode(np.asfortranarray(compressed_mask))
    annotations = [
        {"id": 101, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": POLYGONS},
        {
            "id": 102,
            "image_id": 2,
            "category_id": 1,
            "iscrowd": 1,
            "segmentation": {"size": list(sizes[2]), "counts": _uncompressed_counts(rle_mask)},
        },
        {
            "id": 103,
            "image_id": 3,
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": {"size": compressed["size"], "counts": compressed["counts"].decode("ascii")},
        },
    ]
    instances = {
        "images": [{"id": i, "file_name": names[i], "height": h, "width": w} for i, (h, w) in sizes.items()],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }
    refs = [  # deliberately out of ref_id / sent_id order
        _ref(3, 103, 3, "val", [_sentence(31, "striped thing")]),
        _ref(1, 101, 1, "train", [_sentence(12, "the right one"), _sentence(11, "man in black", raw="Man in black!!")]),
        _ref(2, 102, 2, "train", [_sentence(21, "crowd on the left")]),
    ]
    data = {
        "root": root,
        "image_dir": image_dir,
        "names": names,
        "sizes": sizes,
        "instances": instances,
        "refs": refs,
        "expected_masks": {
            1: np.maximum(*[coco_mask.decode(coco_mask.frPyObjects([p], *sizes[1]))[..., 0] for p in POLYGONS]),
            2: rle_mask,
            3: coco_mask.decode(compressed),
        },
    }
    write_refer(data)
    return data


def write_refer(data):
    with open(data["root"] / "refcoco" / "refs(unc).p", "wb") as file:
        pickle.dump(data["refs"], file, protocol=2)
    with open(data["root"] / "refcoco" / "instances.json", "w") as file:
        json.dump(data["instances"], file)


def convert(data, output_dir, **kwargs):
    return refer.convert(
        str(data["root"]), str(data["image_dir"]), str(output_dir), "refcoco", "unc", num_shards=2, **kwargs
    )


def read_records(prefix):
    """The records of a conversion, in shard order, as dicts of numpy values (plus the raw image bytes)."""
    manifest = read_manifest(str(prefix))
    paths = [os.path.join(os.path.dirname(str(prefix)), shard["path"]) for shard in manifest["shards"]]
    records = []
    for serialized in tf.data.TFRecordDataset(paths):
        raw = tf.io.parse_single_example(serialized, REFERRING_FEATURES)
        record = {key: value.numpy() for key, value in decode_referring(serialized).items()}
        record["image/encoded"] = raw["image/encoded"].numpy()
        for key in ("image/filename", "expression/raw", "dataset", "split"):
            record[key] = record[key].decode("utf-8")
        records.append(record)
    return records


def by_sent_id(records):
    return {int(record["sent_id"]): record for record in records}


def skipped(manifest):
    return manifest["skipped"]


# ---------------------------------------------------------------------------------------------------------
# Restricted unpickler


PLAIN_DATA = [
    {
        "ref_id": 1,
        "split": "train",
        "sent_ids": [3, 4],
        "score": 0.5,
        "flag": None,
        "sentences": [{"raw": "Café, left.", "sent": "cafe left", "sent_id": 3, "tokens": ["cafe", "left"]}],
    },
    {"ref_id": 2, "big": 2**70, "nested": [[1, 2], {"k": "v"}]},
]


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_restricted_pickle_loads_plain_data(tmp_path, protocol):
    path = tmp_path / f"refs{protocol}.p"
    path.write_bytes(pickle.dumps(PLAIN_DATA, protocol=protocol))
    assert load_restricted_pickle(path) == PLAIN_DATA


def test_restricted_pickle_python2_byte_strings_become_text():
    # What Python 2 `cPickle.dump([{'sent': 'caf\xc3\xa9'}], f, 2)` writes: SHORT_BINSTRING (byte strings).
    data = b"\x80\x02]q\x00}q\x01U\x04sentq\x02U\x05caf\xc3\xa9q\x03sa."
    assert loads_restricted_pickle(data) == [{"sent": "café"}]
    # Bytes that are not UTF-8 fall back to latin-1.
    assert loads_restricted_pickle(b"\x80\x02U\x04caf\xe9q\x00.") == "café"


def test_restricted_pickle_admits_only_harmless_globals():
    # Python 3 pickles of sets (protocols < 4) and bytes (protocols < 3) import builtins.set / _codecs.encode.
    assert loads_restricted_pickle(pickle.dumps({"s": {1, 2}, "f": frozenset([3])}, protocol=2)) == {
        "s": {1, 2},
        "f": frozenset([3]),
    }
    assert loads_restricted_pickle(pickle.dumps([b"abc"], protocol=2)) == ["abc"]
    # _codecs.encode only with latin-1: c_codecs\nencode\n(Vx\nVrot13\ntR.
    with pytest.raises(RestrictedPickleError, match="latin-1"):
        loads_restricted_pickle(b"c_codecs\nencode\n(Vx\nVrot13\ntR.")


class _Exploit:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Instance:
    pass


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_restricted_pickle_refuses_code(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 1}, _Exploit(f"touch {marker}")], protocol=protocol))
    with pytest.raises(RestrictedPickleError) as error:
        load_restricted_pickle(path)
    message = str(error.value)
    assert str(path) in message and f"{os.system.__module__}.system" in message and "execute code" in message
    assert not marker.exists()
    for payload in (
        pickle.dumps(_Instance(), protocol=protocol),
        b"cbuiltins\neval\n(V1+1\ntR.",
        b"ccopy_reg\n_reconstructor\n.",
    ):
        with pytest.raises(RestrictedPickleError, match="refused to load global"):
            loads_restricted_pickle(payload)


def test_restricted_pickle_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(PLAIN_DATA, protocol=2)[:-20])
    with pytest.raises(pickle.UnpicklingError, match=r"refs\(unc\)\.p: not a valid pickle"):
        load_restricted_pickle(path)


def test_converter_refuses_a_malicious_refs_file_before_writing(refer_data, tmp_path):
    marker = tmp_path / "pwned"
    with open(refer_data["root"] / "refcoco" / "refs(unc).p", "wb") as file:
        pickle.dump([_Exploit(f"touch {marker}")], file, protocol=2)
    with pytest.raises(RestrictedPickleError, match="refused"):
        convert(refer_data, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------
# Masks


def test_polygons_are_combined_by_union():
    mask = refer.decode_segmentation(POLYGONS, 30, 40)
    parts = coco_mask.decode(coco_mask.frPyObjects(POLYGONS, 30, 40))
    assert parts.shape == (30, 40, 2) and (parts.sum(axis=2) == 2).any()  # the polygons do overlap
    assert mask.dtype == np.uint8 and mask.max() == 1
    np.testing.assert_array_equal(mask, np.maximum(parts[..., 0], parts[..., 1]))


def test_degenerate_polygon_is_dropped_not_read_as_a_box():
    # pycocotools reads a first "polygon" of 4 numbers as a bounding box; a 2-point polygon has no area.
    mask = refer.decode_segmentation([[1.0, 1.0, 30.0, 25.0], POLYGONS[0]], 30, 40)
    np.testing.assert_array_equal(mask, refer.decode_segmentation([POLYGONS[0]], 30, 40))
    with pytest.raises(refer.BadRecord, match="degenerate"):
        refer.decode_segmentation([[1.0, 1.0, 30.0, 25.0]], 30, 40)
    with pytest.raises(refer.BadRecord, match="odd number"):
        refer.decode_segmentation([[1.0, 1.0, 30.0, 25.0, 3.0]], 30, 40)


def test_rle_whose_counts_do_not_cover_the_image_is_refused():
    # pycocotools decodes such counts into uninitialised memory instead of failing.
    good = coco_mask.encode(np.asfortranarray(np.eye(6, 8, dtype=np.uint8)))
    np.testing.assert_array_equal(
        refer.decode_segmentation({"size": [6, 8], "counts": good["counts"].decode()}, 6, 8), np.eye(6, 8)
    )
    for counts in ([7, 3], [7, 3, 50], good["counts"].decode()[:-2], "7$"):
        with pytest.raises(refer.BadRecord, match="malformed segmentation"):
            refer.decode_segmentation({"size": [6, 8], "counts": counts}, 6, 8)
    with pytest.raises(refer.BadRecord, match="mask size differs"):
        refer.decode_segmentation({"size": [8, 6], "counts": [48]}, 6, 8)


# ---------------------------------------------------------------------------------------------------------
# Conversion


def test_converts_every_sentence_with_pycocotools_masks(refer_data, tmp_path):
    manifests = convert(refer_data, tmp_path / "out")
    assert sorted(manifests) == ["train", "val"]
    assert manifests["train"]["num_examples"] == 3 and manifests["val"]["num_examples"] == 1
    assert manifests["train"]["skipped"] == {} and manifests["train"]["task"] == "referring"
    expected = {  # sent_id -> (ref_id, image_id, expression, split)
        11: (1, 1, "man in black", "train"),
        12: (1, 1, "the right one", "train"),
        21: (2, 2, "crowd on the left", "train"),
        31: (3, 3, "striped thing", "val"),
    }
    records = read_records(tmp_path / "out" / "train") + read_records(tmp_path / "out" / "val")
    # Shards are filled round-robin in (ref_id, sent_id) order.
    assert [int(r["sent_id"]) for r in records] == [11, 21, 12, 31]
    for sent_id, record in by_sent_id(records).items():
        ref_id, image_id, expression, split = expected[sent_id]
        assert (int(record["ref_id"]), record["expression/raw"], record["split"]) == (ref_id, expression, split)
        assert record["dataset"] == "refcoco_unc" and record["image/filename"] == refer_data["names"][image_id]
        height, width = refer_data["sizes"][image_id]
        assert (record["image/height"], record["image/width"]) == (height, width)
        assert record["image"].shape == (height, width, 3)
        # RGB JPEG/PNG images are stored as the original bytes.
        assert record["image/encoded"] == (refer_data["image_dir"] / refer_data["names"][image_id]).read_bytes()
        np.testing.assert_array_equal(record["mask"], refer_data["expected_masks"][image_id])
    assert refer_data["expected_masks"][1].sum() < 2 * 19 * 19 + 26 * 19  # overlap counted once


def test_raw_expression_field_and_split_selection(refer_data, tmp_path):
    manifests = convert(refer_data, tmp_path / "out", splits=["train"], expression_field="raw")
    assert list(manifests) == ["train"] and not (tmp_path / "out" / "val.manifest.json").exists()
    assert by_sent_id(read_records(tmp_path / "out" / "train"))[11]["expression/raw"] == "Man in black!!"
    with pytest.raises(ValueError, match=r"splits \['testA'\] are not in"):
        convert(refer_data, tmp_path / "out2", splits=["testA"])
    with pytest.raises(ValueError, match="split_by"):
        refer.convert(str(refer_data["root"]), str(refer_data["image_dir"]), str(tmp_path / "o"), "refcoco+", "umd")
    assert not (tmp_path / "out2").exists()


def test_skip_reasons_are_the_same_on_every_run(refer_data, tmp_path):
    """A file that is no image at all: PIL's message names a BytesIO object by address; the manifest must not,
    nor repeat its category, so a re-run writes the same manifest (the command line aside)."""
    path = refer_data["image_dir"] / refer_data["names"][1]
    path.write_bytes(b"this is not an image")
    texts = []
    for run in ("a", "b"):
        convert(refer_data, tmp_path / run)
        manifest = json.loads((tmp_path / run / "train.manifest.json").read_text())
        manifest.pop("command", None)
        texts.append(json.dumps(manifest, sort_keys=True).replace(str(tmp_path / run), "OUT"))
    assert texts[0] == texts[1]
    reason = json.loads(texts[0])["skipped_records"][0]["reason"]
    assert " at 0x" not in reason and reason.count("corrupt or truncated") == 1, reason
    assert reason == f"corrupt or truncated image: {path}: cannot identify image file", reason


def test_corrupt_image_is_skipped(refer_data, tmp_path):
    path = refer_data["image_dir"] / refer_data["names"][1]
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated JPEG
    manifest = convert(refer_data, tmp_path / "out")["train"]
    assert manifest["skipped"] == {"corrupt or truncated image": 2} and manifest["num_examples"] == 1
    assert {r["record"].split(" (")[0] for r in manifest["skipped_records"]} == {
        "refcoco_unc ref_id 1 sent_id 11",
        "refcoco_unc ref_id 1 sent_id 12",
    }
    (record,) = read_records(tmp_path / "out" / "train")
    assert int(record["sent_id"]) == 21
    np.testing.assert_array_equal(record["mask"], refer_data["expected_masks"][2])


def test_missing_image_file_is_skipped(refer_data, tmp_path):
    (refer_data["image_dir"] / refer_data["names"][3]).unlink()
    manifests = convert(refer_data, tmp_path / "out")
    assert manifests["val"]["skipped"] == {"missing image file": 1} and manifests["val"]["num_examples"] == 0
    assert manifests["train"]["num_examples"] == 3 and manifests["train"]["skipped"] == {}
    assert read_records(tmp_path / "out" / "val") == []


def _converted_pixels(mode_array, mode, format, tmp_path, refer_data):
    path = refer_data["image_dir"] / refer_data["names"][2]  # a .png name: PNG bytes whatever the mode
    Image.fromarray(mode_array, mode=mode).save(path, format=format) if mode else Image.fromarray(mode_array).save(
        path, format=format
    )
    manifest = convert(refer_data, tmp_path / "out")["train"]
    assert manifest["skipped"] == {} and manifest["num_examples"] == 3
    record = by_sent_id(read_records(tmp_path / "out" / "train"))[21]
    assert record["image"].shape == (24, 36, 3) and record["image"].dtype == np.uint8
    assert record["image/encoded"] != path.read_bytes()  # converted images are re-encoded (as PNG)
    assert Image.open(io.BytesIO(record["image/encoded"])).format == "PNG"
    np.testing.assert_array_equal(record["mask"], refer_data["expected_masks"][2])
    return record["image"]


def test_grayscale_image_is_converted(refer_data, tmp_path):
    gray = _pixels(24, 36, 1)[..., 0]
    image = _converted_pixels(gray, None, "PNG", tmp_path, refer_data)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], gray)


def test_rgba_image_is_converted(refer_data, tmp_path):
    rgba = _pixels(24, 36, 4)
    np.testing.assert_array_equal(_converted_pixels(rgba, None, "PNG", tmp_path, refer_data), rgba[..., :3])


def test_16_bit_image_is_converted(refer_data, tmp_path):
    deep = RNG.integers(0, 65536, size=(24, 36), dtype=np.uint16)
    assert Image.fromarray(deep).mode == "I;16"
    image = _converted_pixels(deep, None, "PNG", tmp_path, refer_data)
    expected = np.round(deep.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    np.testing.assert_array_equal(image[..., 0], expected)


def test_mask_size_differing_from_image_is_skipped(refer_data, tmp_path):
    # instances.json gives the size the polygons are rasterised at; the image file says otherwise.
    refer_data["instances"]["images"][0]["height"] = 31
    # An RLE whose size is not the image's.
    refer_data["instances"]["annotations"][1]["segmentation"]["size"] = [36, 24]
    write_refer(refer_data)
    manifest = convert(refer_data, tmp_path / "out")["train"]
    assert manifest["skipped"] == {"mask size differs from image": 3} and manifest["num_examples"] == 0
    assert "is 30x40, instances.json says 31x40" in manifest["skipped_records"][0]["reason"]


def test_empty_expression_is_skipped(refer_data, tmp_path):
    refer_data["refs"][1]["sentences"][0]["sent"] = "  "
    refer_data["refs"][2]["sentences"][0]["sent"] = " . "  # tokenizes to nothing (the final "." is dropped)
    write_refer(refer_data)
    manifest = convert(refer_data, tmp_path / "out")["train"]
    assert manifest["skipped"] == {"empty expression": 2} and manifest["num_examples"] == 1
    (record,) = read_records(tmp_path / "out" / "train")
    assert (int(record["sent_id"]), record["expression/raw"]) == (11, "man in black")
    np.testing.assert_array_equal(record["mask"], refer_data["expected_masks"][1])


def test_annotation_missing_from_instances_is_skipped(refer_data, tmp_path):
    refer_data["refs"][0]["ann_id"] = 999
    refer_data["refs"].append(_ref(4, 101, 7, "val", [_sentence(41, "ghost")]))  # image 7 unknown, ann on image 1
    refer_data["instances"]["annotations"].append({"id": 104, "image_id": 8, "segmentation": POLYGONS})
    refer_data["refs"].append(_ref(5, 104, 8, "val", [_sentence(51, "nowhere")]))  # annotation's image unknown
    write_refer(refer_data)
    manifest = convert(refer_data, tmp_path / "out")["val"]
    assert manifest["skipped"] == {
        "annotation missing from instances.json": 1,
        "annotation belongs to another image": 1,
        "image missing from instances.json": 1,
    }
    assert manifest["num_examples"] == 0
    assert "ann_id 999" in manifest["skipped_records"][0]["reason"]


@pytest.mark.large  # two conversions and the CLI, about 10 s: make test-large (the default suite's limit)
def test_rerun_gives_byte_identical_shards_and_cli(refer_data, tmp_path):
    first = convert(refer_data, tmp_path / "a")
    # The second run is the command-line tool in another process (protobuf map order differs per process).
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_tools.refer",
            f"--refer_root={refer_data['root']}",
            f"--image_dir={refer_data['image_dir']}",
            f"--output_dir={tmp_path / 'b'}",
            "--dataset=refcoco",
            "--split_by=unc",
            "--num_shards=2",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "train: 3 records" in completed.stdout
    for split in ("train", "val"):
        second = read_manifest(str(tmp_path / "b" / split))
        assert [s["sha256"] for s in second["shards"]] == [s["sha256"] for s in first[split]["shards"]]
        for shard in second["shards"]:
            assert (tmp_path / "a" / shard["path"]).read_bytes() == (tmp_path / "b" / shard["path"]).read_bytes()


def test_cli_refused_pickle_is_one_line_naming_the_file(refer_data, tmp_path):
    refs = refer_data["root"] / "refcoco" / "refs(unc).p"
    with open(refs, "wb") as file:
        pickle.dump([_Exploit(f"touch {tmp_path / 'pwned'}")], file, protocol=2)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_tools.refer",
            f"--refer_root={refer_data['root']}",
            f"--image_dir={refer_data['image_dir']}",
            f"--output_dir={tmp_path / 'out'}",
            "--dataset=refcoco",
            "--split_by=unc",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 1 and "Traceback" not in completed.stderr, completed.stderr[-3000:]
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(refs) in last and "refused" in last, last
    assert not (tmp_path / "pwned").exists()


def test_cli_help_says_where_to_download():
    completed = subprocess.run(
        [sys.executable, "-m", "data_tools.refer", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode in (0, 1), completed.stderr[-3000:]  # absl exits 1 after --help
    assert (
        "lichengunc/refer" in completed.stdout and "train2014" in completed.stdout and "--split_by" in completed.stdout
    )
