"""data_tools.referit (ReferItGame, text_objseg distribution) on fixtures in the source format."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

scipy_io = pytest.importorskip("scipy.io")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

from data_tools import referit  # noqa: E402
from tf_recurrent_seg.data.records import REFERRING_FEATURES, decode_referring, read_manifest  # noqa: E402

RNG = np.random.default_rng(11)
SIZES = {"100": (20, 30), "200": (16, 16)}
QUERIES = {  # deliberately not in (image, region) order
    "200_1": ["the dog"],
    "100_2": ["sky", "blue sky above"],
    "100_1": ["man on left"],
}


def segimg(height, width, seed):
    """A text_objseg-style segimg_t: 0 on the region, other labels elsewhere."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(1, 4, size=(height, width)).astype(np.uint8)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    labels[top : top + height // 2, left : left + width // 3] = 0
    return labels


def save_mat(path, array):
    scipy_io.savemat(str(path), {"segimg_t": array})


@pytest.fixture
def referit_data(tmp_path):
    root = tmp_path / "referit"
    (root / "images").mkdir(parents=True)
    (root / "mask").mkdir()
    for image_id, (height, width) in SIZES.items():
        Image.fromarray(RNG.integers(0, 256, size=(height, width, 3), dtype=np.uint8)).save(
            root / "images" / f"{image_id}.jpg", format="JPEG"
        )
    segimgs = {}
    for index, key in enumerate(sorted(QUERIES)):
        segimgs[key] = segimg(*SIZES[key.split("_")[0]], seed=index)
        # the real files hold doubles or integers; use both
        save_mat(root / "mask" / f"{key}.mat", segimgs[key].astype(np.float64 if index % 2 else np.uint8))
    (root / "referit_query_test.json").write_text(json.dumps(QUERIES))
    (root / "referit_test_imlist.txt").write_text("100\n200\n")
    return {"root": root, "segimgs": segimgs}


def read_records(prefix):
    manifest = read_manifest(str(prefix))
    paths = [os.path.join(os.path.dirname(str(prefix)), shard["path"]) for shard in manifest["shards"]]
    records = []
    for serialized in tf.data.TFRecordDataset(paths):
        record = {key: value.numpy() for key, value in decode_referring(serialized).items()}
        record["image/encoded"] = tf.io.parse_single_example(serialized, REFERRING_FEATURES)["image/encoded"].numpy()
        for key in ("image/filename", "expression/raw", "dataset", "split"):
            record[key] = record[key].decode("utf-8")
        records.append(record)
    return records


def convert(data, output_dir, splits=("test",), num_shards=1, **kwargs):
    return referit.convert(str(data["root"]), str(output_dir), splits, num_shards, **kwargs)


def test_converts_every_expression_with_inverted_masks(referit_data, tmp_path):
    manifest = convert(referit_data, tmp_path / "out")["test"]
    assert manifest["num_examples"] == 4 and manifest["skipped"] == {} and manifest["task"] == "referring"
    records = read_records(tmp_path / "out" / "test")
    assert [(int(r["ref_id"]), int(r["sent_id"]), r["expression/raw"]) for r in records] == [
        (100001, 100001000, "man on left"),
        (100002, 100002000, "sky"),
        (100002, 100002001, "blue sky above"),
        (200001, 200001000, "the dog"),
    ]
    for record in records:
        key = f"{int(record['ref_id']) // 1000}_{int(record['ref_id']) % 1000}"
        image_id = key.split("_")[0]
        labels = referit_data["segimgs"][key]
        # Foreground is segimg_t == 0: the mask is the INVERSE of "nonzero label".
        np.testing.assert_array_equal(record["mask"], (labels == 0).astype(np.uint8))
        assert 0 < record["mask"].sum() < labels.size and record["mask"][labels > 0].max() == 0
        assert (
            record["image/filename"] == f"{image_id}.jpg"
            and record["dataset"] == "referit"
            and record["split"] == "test"
        )
        assert (record["image/height"], record["image/width"]) == SIZES[image_id]
        assert record["image/encoded"] == (referit_data["root"] / "images" / f"{image_id}.jpg").read_bytes()


def test_real_val_queries(referit_data, tmp_path, shared_data_dir):
    """The real referit_query_val.json: fixture images and masks for a few of its images, the rest absent."""
    annotation_dir = tmp_path / "annotations"
    annotation_dir.mkdir()
    shutil.copy(shared_data_dir / "referit_query_val.json", annotation_dir / "referit_query_val.json")
    queries = json.loads((shared_data_dir / "referit_query_val.json").read_text())
    total = sum(len(expressions) for expressions in queries.values())
    chosen = ["9739", "3071", "8991"]  # 7, >= 6 and 22 regions
    root = tmp_path / "real"
    (root / "images").mkdir(parents=True)
    (root / "mask").mkdir()
    keys = sorted((key for key in queries if key.split("_")[0] in chosen), key=lambda k: tuple(map(int, k.split("_"))))
    for image_id in chosen:
        Image.fromarray(RNG.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)).save(
            root / "images" / f"{image_id}.jpg"
        )
    for key in keys:
        save_mat(root / "mask" / f"{key}.mat", segimg(12, 10, seed=int(key.split("_")[1])))
    expected = [(key, index, text) for key in keys for index, text in enumerate(queries[key])]

    manifest = referit.convert(str(root), str(tmp_path / "out"), ["val"], 3, annotation_dir=str(annotation_dir))["val"]
    assert manifest["num_examples"] == len(expected) and len(expected) > 30
    assert manifest["skipped"] == {"missing image file": total - len(expected)}
    records = sorted(read_records(tmp_path / "out" / "val"), key=lambda r: int(r["sent_id"]))
    got = [
        (f"{int(r['ref_id']) // 1000}_{int(r['ref_id']) % 1000}", int(r["sent_id"]) % 1000, r["expression/raw"])
        for r in records
    ]
    assert got == expected
    for record, (key, _, _) in zip(records, expected):
        np.testing.assert_array_equal(record["mask"], segimg(12, 10, seed=int(key.split("_")[1])) == 0)

    # With an image list, the keys of other images are skipped as outside the split.
    (annotation_dir / "referit_val_imlist.txt").write_text("\n".join(chosen) + "\n")
    manifest = referit.convert(str(root), str(tmp_path / "out2"), ["val"], 3, annotation_dir=str(annotation_dir))["val"]
    assert manifest["num_examples"] == len(expected)
    assert manifest["skipped"] == {"image not in the split's image list": total - len(expected)}


def test_corrupt_image_is_skipped(referit_data, tmp_path):
    path = referit_data["root"] / "images" / "100.jpg"
    path.write_bytes(path.read_bytes()[:200])
    manifest = convert(referit_data, tmp_path / "out")["test"]
    assert manifest["skipped"] == {"corrupt or truncated image": 3} and manifest["num_examples"] == 1
    (record,) = read_records(tmp_path / "out" / "test")
    assert record["expression/raw"] == "the dog"
    np.testing.assert_array_equal(record["mask"], referit_data["segimgs"]["200_1"] == 0)


def test_missing_image_and_mask_files_are_skipped(referit_data, tmp_path):
    (referit_data["root"] / "images" / "200.jpg").unlink()
    (referit_data["root"] / "mask" / "100_2.mat").unlink()
    manifest = convert(referit_data, tmp_path / "out")["test"]
    assert manifest["skipped"] == {"missing image file": 1, "missing mask file": 2} and manifest["num_examples"] == 1
    (record,) = read_records(tmp_path / "out" / "test")
    assert record["expression/raw"] == "man on left"
    np.testing.assert_array_equal(record["mask"], referit_data["segimgs"]["100_1"] == 0)


def test_unreadable_or_malformed_mask_file_is_skipped(referit_data, tmp_path):
    (referit_data["root"] / "mask" / "100_1.mat").write_bytes(b"MATLAB 5.0 MAT-file, this is not one" + bytes(100))
    scipy_io.savemat(str(referit_data["root"] / "mask" / "200_1.mat"), {"other": np.zeros((16, 16))})
    manifest = convert(referit_data, tmp_path / "out")["test"]
    assert (
        manifest["skipped"] == {"unreadable mask file": 1, "malformed mask file": 1} and manifest["num_examples"] == 2
    )
    assert [r["expression/raw"] for r in read_records(tmp_path / "out" / "test")] == ["sky", "blue sky above"]


def test_mask_size_differing_from_image_is_skipped(referit_data, tmp_path):
    save_mat(referit_data["root"] / "mask" / "100_2.mat", segimg(30, 20, seed=0))  # transposed
    manifest = convert(referit_data, tmp_path / "out")["test"]
    assert manifest["skipped"] == {"mask size differs from image": 2} and manifest["num_examples"] == 2
    assert "mask 30x20, image 20x30" in manifest["skipped_records"][0]["reason"]
    assert [r["expression/raw"] for r in read_records(tmp_path / "out" / "test")] == ["man on left", "the dog"]


def test_empty_expression_is_skipped(referit_data, tmp_path):
    queries = dict(QUERIES, **{"100_2": ["  ", "blue sky above"], "200_1": ["."]})
    (referit_data["root"] / "referit_query_test.json").write_text(json.dumps(queries))
    manifest = convert(referit_data, tmp_path / "out")["test"]
    assert manifest["skipped"] == {"empty expression": 2} and manifest["num_examples"] == 2
    records = read_records(tmp_path / "out" / "test")
    # The sent_id keeps the expression's index in the query list.
    assert [(int(r["sent_id"]), r["expression/raw"]) for r in records] == [
        (100001000, "man on left"),
        (100002001, "blue sky above"),
    ]


def test_malformed_keys_and_images_outside_the_list_are_skipped(referit_data, tmp_path):
    queries = dict(
        QUERIES, **{"100": ["no region"], "300_1": ["elsewhere", "twice"], "200_1": ["the dog", None], "100_3": {}}
    )
    (referit_data["root"] / "referit_query_test.json").write_text(json.dumps(queries))
    manifest = convert(referit_data, tmp_path / "out")["test"]
    assert manifest["skipped"] == {
        "malformed query key": 1,
        "image not in the split's image list": 2,
        "malformed query entry": 2,
    }
    assert manifest["num_examples"] == 4


@pytest.mark.parametrize("kind", ["grayscale", "rgba", "16-bit"])
def test_converted_image_modes(referit_data, tmp_path, kind):
    height, width = SIZES["200"]
    if kind == "grayscale":
        source = RNG.integers(0, 256, size=(height, width), dtype=np.uint8)
        expected = np.repeat(source[..., None], 3, axis=2)
    elif kind == "rgba":
        source = RNG.integers(0, 256, size=(height, width, 4), dtype=np.uint8)
        expected = source[..., :3]
    else:
        source = RNG.integers(0, 65536, size=(height, width), dtype=np.uint16)
        expected = np.repeat(np.round(source * 255.0 / 65535.0).astype(np.uint8)[..., None], 3, axis=2)
    Image.fromarray(source).save(
        referit_data["root"] / "images" / "200.jpg", format="PNG"
    )  # lossless, whatever the name
    manifest = convert(referit_data, tmp_path / "out")["test"]
    assert manifest["skipped"] == {} and manifest["num_examples"] == 4
    record = read_records(tmp_path / "out" / "test")[-1]
    np.testing.assert_array_equal(record["image"], expected)
    np.testing.assert_array_equal(record["mask"], referit_data["segimgs"]["200_1"] == 0)


def test_missing_query_file_fails_before_writing(referit_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="referit_query_trainval.json"):
        convert(referit_data, tmp_path / "out", splits=("test", "trainval"))
    assert not (tmp_path / "out").exists()


@pytest.mark.large  # two conversions and the CLI, about 20 s: make test-large (the default suite's limit)
def test_rerun_gives_byte_identical_shards_and_cli(referit_data, tmp_path):
    first = convert(referit_data, tmp_path / "a", num_shards=2)["test"]
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_tools.referit",
            f"--referit_root={referit_data['root']}",
            f"--output_dir={tmp_path / 'b'}",
            "--splits=test",
            "--num_shards=2",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "test: 4 records" in completed.stdout
    second = read_manifest(str(tmp_path / "b" / "test"))
    assert [s["sha256"] for s in second["shards"]] == [s["sha256"] for s in first["shards"]]
    help_text = subprocess.run(
        [sys.executable, "-m", "data_tools.referit", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    assert "text_objseg" in help_text and "referitdata.tar.gz" in help_text and "--referit_root" in help_text
