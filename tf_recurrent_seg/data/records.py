"""TFRecord schemas of both tasks, a sharded writer that never leaves half-written shards, and the manifest.

Referring example (one per expression):
    image/encoded (JPEG or PNG bytes), image/height, image/width (int64), image/filename (bytes),
    mask/encoded (PNG, 0/1, at the image's original resolution), expression/raw (bytes, UTF-8),
    ref_id, sent_id (int64), dataset, split (bytes).
Parsing example (one per image):
    image/encoded, image/height, image/width, image/filename, label/encoded (PNG of class ids, 255 = ignore),
    dataset, split. The class names live in the manifest.

Shards are `<prefix>-00000-of-000NN.tfrecord`; example i goes to shard i mod NN, so the same input order gives
the same shards. Each shard is written under a temporary name and renamed when complete, and the manifest
(`<prefix>.manifest.json`: counts, class names, source, creation command, per-shard SHA-256, skipped records
with their reasons) is written last: a conversion that was interrupted leaves no shard that looks finished.
"""

import hashlib
import io
import json
import os
import pathlib
import sys
from collections import Counter
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

IGNORE_LABEL = 255

REFERRING_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/filename": tf.io.FixedLenFeature([], tf.string),
    "mask/encoded": tf.io.FixedLenFeature([], tf.string),
    "expression/raw": tf.io.FixedLenFeature([], tf.string),
    "ref_id": tf.io.FixedLenFeature([], tf.int64),
    "sent_id": tf.io.FixedLenFeature([], tf.int64),
    "dataset": tf.io.FixedLenFeature([], tf.string),
    "split": tf.io.FixedLenFeature([], tf.string),
}
PARSING_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/filename": tf.io.FixedLenFeature([], tf.string),
    "label/encoded": tf.io.FixedLenFeature([], tf.string),
    "dataset": tf.io.FixedLenFeature([], tf.string),
    "split": tf.io.FixedLenFeature([], tf.string),
}


def _bytes(value: bytes | str) -> tf.train.Feature:
    value = value.encode("utf-8") if isinstance(value, str) else value
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 array (a mask or a label map)."""
    if array.ndim != 2 or array.dtype != np.uint8:
        raise ValueError(
            f"a mask or label map must be a 2-D uint8 array, got shape {array.shape} and dtype {array.dtype}"
        )
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def referring_example(
    image_encoded: bytes,
    height: int,
    width: int,
    filename: str,
    mask: np.ndarray,
    expression: str,
    ref_id: int,
    sent_id: int,
    dataset: str,
    split: str,
) -> tf.train.Example:
    """A referring example; `mask` is a (height, width) array, nonzero on the referred object."""
    if mask.shape != (height, width):
        raise ValueError(f"mask has shape {mask.shape}, but the image is {height}x{width}")
    features = {
        "image/encoded": _bytes(image_encoded),
        "image/height": _int64(height),
        "image/width": _int64(width),
        "image/filename": _bytes(filename),
        "mask/encoded": _bytes(encode_png((mask > 0).astype(np.uint8))),
        "expression/raw": _bytes(expression),
        "ref_id": _int64(ref_id),
        "sent_id": _int64(sent_id),
        "dataset": _bytes(dataset),
        "split": _bytes(split),
    }
    return tf.train.Example(features=tf.train.Features(feature=features))


def parsing_example(
    image_encoded: bytes,
    height: int,
    width: int,
    filename: str,
    labels: np.ndarray,
    num_classes: int,
    dataset: str,
    split: str,
) -> tf.train.Example:
    """A parsing example; `labels` is a (height, width) uint8 map of ids in [0, num_classes) or IGNORE_LABEL."""
    if labels.shape != (height, width):
        raise ValueError(f"label map has shape {labels.shape}, but the image is {height}x{width}")
    invalid = np.unique(labels[(labels >= num_classes) & (labels != IGNORE_LABEL)])
    if invalid.size:
        raise ValueError(f"label map holds ids {invalid.tolist()} outside [0, {num_classes}) and not {IGNORE_LABEL}")
    features = {
        "image/encoded": _bytes(image_encoded),
        "image/height": _int64(height),
        "image/width": _int64(width),
        "image/filename": _bytes(filename),
        "label/encoded": _bytes(encode_png(labels.astype(np.uint8))),
        "dataset": _bytes(dataset),
        "split": _bytes(split),
    }
    return tf.train.Example(features=tf.train.Features(feature=features))


def decode_referring(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one referring record: image (H, W, 3) uint8, mask (H, W) uint8 0/1, and the scalar fields."""
    parsed = tf.io.parse_single_example(serialized, REFERRING_FEATURES)
    parsed["image"] = tf.io.decode_image(parsed.pop("image/encoded"), channels=3, expand_animations=False)
    parsed["mask"] = tf.io.decode_png(parsed.pop("mask/encoded"), channels=1)[..., 0]
    return parsed


def decode_parsing(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one parsing record: image (H, W, 3) uint8, labels (H, W) uint8, and the scalar fields."""
    parsed = tf.io.parse_single_example(serialized, PARSING_FEATURES)
    parsed["image"] = tf.io.decode_image(parsed.pop("image/encoded"), channels=3, expand_animations=False)
    parsed["labels"] = tf.io.decode_png(parsed.pop("label/encoded"), channels=1)[..., 0]
    return parsed


def shard_paths(prefix: str, num_shards: int) -> list[str]:
    return [f"{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord" for index in range(num_shards)]


def manifest_path(prefix: str) -> str:
    return f"{prefix}.manifest.json"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardedRecordWriter:
    """Writes examples round-robin into `num_shards` shards, then renames them and writes the manifest.

    Use it as a context manager; leaving the block with an exception removes the temporary files and writes
    no manifest. `skip(record, reason, detail)` logs a warning that names the record and counts it in the
    manifest under its reason.

    Args:
        prefix: output path prefix, e.g. `data/refcoco_unc/train`.
        num_shards: number of shards.
        task: "referring" or "parsing".
        source: where the data came from (written to the manifest).
        class_names: the parsing task's class names, in id order.

    Example:
    ```python
    with ShardedRecordWriter("out/train", 4, task="parsing", source="ATR", class_names=names) as writer:
        writer.write(parsing_example(...))
        writer.skip("997.jpg", "corrupt image")
    ```
    """

    def __init__(self, prefix: str, num_shards: int, task: str, source: str, class_names: Sequence[str] | None = None):
        if num_shards < 1:
            raise ValueError(f"num_shards must be at least 1, got {num_shards}")
        self.prefix, self.num_shards, self.task, self.source = str(prefix), num_shards, task, source
        self.class_names = list(class_names) if class_names is not None else None
        self.paths = shard_paths(self.prefix, num_shards)
        self.counts = [0] * num_shards
        self.skipped: Counter[str] = Counter()
        self.skipped_records: list[dict[str, str]] = []
        self._writers: list[tf.io.TFRecordWriter] = []

    def __enter__(self) -> "ShardedRecordWriter":
        pathlib.Path(self.prefix).parent.mkdir(parents=True, exist_ok=True)
        self._writers = [tf.io.TFRecordWriter(path + ".tmp") for path in self.paths]
        return self

    def write(self, example: tf.train.Example) -> None:
        shard = sum(self.counts) % self.num_shards
        # deterministic: the Example's feature map is otherwise serialised in a per-process order.
        self._writers[shard].write(example.SerializeToString(deterministic=True))
        self.counts[shard] += 1

    def skip(self, record: str, reason: str, detail: str = "") -> None:
        """Logs and counts a record that is not converted; `reason` is a category, `detail` the specifics."""
        message = f"{reason}: {detail}" if detail else reason
        logging.warning("skipping %s: %s", record, message)
        self.skipped[reason] += 1
        self.skipped_records.append({"record": record, "reason": message})

    def __exit__(self, exc_type, exc, traceback) -> None:
        for writer in self._writers:
            writer.close()
        if exc_type is not None:
            for path in self.paths:
                if os.path.exists(path + ".tmp"):
                    os.remove(path + ".tmp")
            return
        for path in self.paths:
            os.replace(path + ".tmp", path)
        manifest = {
            "task": self.task,
            "source": self.source,
            "command": " ".join(sys.argv),
            "num_examples": sum(self.counts),
            "class_names": self.class_names,
            "shards": [
                {"path": os.path.basename(path), "num_examples": count, "sha256": _sha256(path)}
                for path, count in zip(self.paths, self.counts)
            ],
            "skipped": dict(self.skipped),
            "skipped_records": self.skipped_records,
        }
        with open(manifest_path(self.prefix) + ".tmp", "w") as file:
            json.dump(manifest, file, indent=2)
        os.replace(manifest_path(self.prefix) + ".tmp", manifest_path(self.prefix))
        logging.info("wrote %d examples in %d shards to %s-*", sum(self.counts), self.num_shards, self.prefix)


def read_manifest(prefix: str) -> dict:
    """The manifest of a finished conversion; a missing one means the conversion did not finish."""
    path = manifest_path(prefix)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: the conversion of {prefix} did not finish (or never ran)")
    with open(path) as file:
        return json.load(file)
