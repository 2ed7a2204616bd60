"""Shared pieces of the parsing converters (ATR, Fashionista, PASCAL-Part Horse-Cow, LIP/CIHP).

Each converter turns its source into `ParsingRecord`s (a name, a file name and a loader) and hands them,
split by split, to `write_split`, which applies the project's bad-input rules:

- the loader raises `BadRecord` for a missing, corrupt or truncated file (`tf_recurrent_seg.data.image_io`:
  grayscale, palette, RGBA and 16-bit images are converted, not refused);
- a label map whose size differs from its image is refused;
- a label map holding an id that is neither a class nor IGNORE_LABEL (255) is refused, the reason naming the
  ids: a label is never silently remapped.

Every refused record is skipped with `ShardedRecordWriter.skip(name, reason)`, so it is logged and counted in
the split's manifest. Records are written in the order given, so the same source gives identical shards.

Next to the shards, `write_dataset_info` writes `<output_dir>/classes.json` (class names, the left/right
class pairs and the label permutation a horizontal flip must apply, the splits) and `<output_dir>/
<split>_ids.txt`: the shard manifest carries the class names only.
"""

import dataclasses
import glob
import json
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from tf_recurrent_seg.data.image_io import BadRecord, read_image, read_label_map
from tf_recurrent_seg.data.records import IGNORE_LABEL, ShardedRecordWriter, manifest_path, parsing_example

Loader = Callable[[], tuple[bytes, np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class ParsingRecord:
    """One source sample.

    Attributes:
        name: how warnings and the manifest name it (e.g. the image path or id).
        filename: stored as `image/filename`.
        load: returns (image bytes to store, (H, W, 3) uint8 pixels, (H', W') uint8 label ids); raises
            BadRecord for a sample that cannot be converted.
    """

    name: str
    filename: str
    load: Loader


def flip_permutation(num_classes: int, pairs: Iterable[tuple[int, int]]) -> list[int]:
    """The class id each id becomes under a horizontal flip (identity except for the left/right pairs)."""
    permutation = list(range(num_classes))
    for left, right in pairs:
        permutation[left], permutation[right] = right, left
    return permutation


def check_label_ids(labels: np.ndarray, num_classes: int) -> None:
    """BadRecord naming the ids of `labels` that are neither in [0, num_classes) nor IGNORE_LABEL."""
    values = np.unique(labels)
    invalid = values[(values >= num_classes) & (values != IGNORE_LABEL)]
    if invalid.size:
        raise BadRecord(
            f"label ids outside the {num_classes} classes and not the ignore label {IGNORE_LABEL}",
            f"ids {invalid.tolist()}",
        )


def check_sizes(pixels: np.ndarray, labels: np.ndarray) -> None:
    """BadRecord when the label map's size differs from the image's."""
    if labels.shape != pixels.shape[:2]:
        raise BadRecord(
            "label map size differs from image",
            f"label map {labels.shape[0]}x{labels.shape[1]}, image {pixels.shape[0]}x{pixels.shape[1]}",
        )


def write_split(
    prefix: str,
    records: Iterable[ParsingRecord],
    *,
    num_shards: int,
    dataset: str,
    split: str,
    class_names: Sequence[str],
    source: str,
) -> dict:
    """Converts `records` in order into `<prefix>-*-of-*.tfrecord` + manifest; returns counts.

    Returns:
        {"written": int, "skipped": int, "manifest": path}.
    """
    num_classes = len(class_names)
    with ShardedRecordWriter(prefix, num_shards, task="parsing", source=source, class_names=class_names) as writer:
        for record in records:
            try:
                image_bytes, pixels, labels = record.load()
                check_sizes(pixels, labels)
                check_label_ids(labels, num_classes)
            except BadRecord as error:
                writer.skip(record.name, error.reason, error.detail)
                continue
            height, width = labels.shape
            writer.write(
                parsing_example(image_bytes, height, width, record.filename, labels, num_classes, dataset, split)
            )
        written, skipped = sum(writer.counts), len(writer.skipped_records)
    return {"written": written, "skipped": skipped, "manifest": manifest_path(prefix)}


def write_dataset_info(
    output_dir: str,
    *,
    dataset: str,
    class_names: Sequence[str],
    left_right_pairs: Sequence[tuple[int, int]] = (),
    splits: dict[str, Sequence[str]],
    results: dict[str, dict] | None = None,
    extra: dict | None = None,
) -> str:
    """Writes `<output_dir>/classes.json` and `<output_dir>/<split>_ids.txt`; returns the json path.

    classes.json holds: dataset, class_names, num_classes, ignore_label, left_right_pairs (class id pairs a
    horizontal flip swaps), flip_permutation (label id -> label id after a horizontal flip), splits (per
    split: the prefix, the number of source ids, written and skipped records), and `extra` (converter
    specific: split rule, label mapping...).
    """
    os.makedirs(output_dir, exist_ok=True)
    split_info = {}
    for split, ids in splits.items():
        with open(os.path.join(output_dir, f"{split}_ids.txt"), "w") as file:
            file.writelines(f"{record_id}\n" for record_id in ids)
        split_info[split] = {"prefix": split, "num_ids": len(ids), "ids_file": f"{split}_ids.txt"}
        if results and split in results:
            split_info[split].update(written=results[split]["written"], skipped=results[split]["skipped"])
    info = {
        "dataset": dataset,
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "ignore_label": IGNORE_LABEL,
        "left_right_pairs": [list(pair) for pair in left_right_pairs],
        "flip_permutation": flip_permutation(len(class_names), left_right_pairs),
        "splits": split_info,
        **(extra or {}),
    }
    path = os.path.join(output_dir, "classes.json")
    with open(path + ".tmp", "w") as file:
        json.dump(info, file, indent=2)
    os.replace(path + ".tmp", path)
    return path


def read_id_list(path: str) -> list[str]:
    """Ids from a text file: the first whitespace-separated token of each non-empty line ('#' starts a comment).

    Raises:
        FileNotFoundError: the file does not exist.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"id list {path} does not exist")
    ids = []
    with open(path) as file:
        for line in file:
            line = line.split("#", 1)[0].strip()
            if line:
                ids.append(line.split()[0])
    return ids


def unique_in_order(ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """(ids with repeats removed, first occurrence kept; the repeated ids)."""
    seen, unique, repeated = set(), [], []
    for record_id in ids:
        (repeated if record_id in seen else unique).append(record_id)
        seen.add(record_id)
    return unique, repeated


def locate(root: str, name: str, max_depth: int = 2, directory: bool | None = None) -> str | None:
    """`root/name`, or the first (sorted) `root/*/name`, `root/*/*/name` up to `max_depth` levels down.

    Archives unpack with an extra level (LIP's `TrainVal_images/train_images`, ATR's `humanparsing/JPEGImages`);
    this finds the folder or file either way. `directory` True/False restricts to folders/files.
    """

    def fits(path: str) -> bool:
        if directory is None:
            return os.path.exists(path)
        return os.path.isdir(path) if directory else os.path.isfile(path)

    for depth in range(max_depth + 1):
        pattern = os.path.join(glob.escape(root), *(["*"] * depth), name)
        for path in sorted(glob.glob(pattern)):
            if fits(path):
                return path
    return None


def require(root: str, name: str, what: str, directory: bool = True) -> str:
    """`locate`, or FileNotFoundError saying what was looked for and where."""
    path = locate(root, name, directory=directory)
    if path is None:
        raise FileNotFoundError(f"{what}: no {name} in {root} (or up to two folder levels below it)")
    return path


def file_stems(directory: str, extension: str) -> list[str]:
    """Sorted names (without extension) of the files `*<extension>` in `directory`."""
    if not os.path.isdir(directory):
        return []
    return sorted(name[: -len(extension)] for name in os.listdir(directory) if name.endswith(extension))


def missing_listed_record(name: str, reason: str) -> ParsingRecord:
    """A record that is skipped with `reason` (an id listed whose files cannot be used)."""

    def load():
        raise BadRecord(reason)

    return ParsingRecord(name=name, filename=name, load=load)


def image_label_record(record_id: str, image_path: str, label_path: str) -> ParsingRecord:
    """A record read from an image file and a PNG label map file (ATR, LIP, CIHP)."""

    def load():
        image_bytes, pixels = read_image(image_path)
        labels = read_label_map(label_path)
        return image_bytes, pixels, labels

    return ParsingRecord(name=record_id, filename=os.path.basename(image_path), load=load)


def print_split_results(results: dict) -> None:
    """One line per split of a parsing converter's `convert_*` result (what its command line prints)."""
    for split, result in results.items():
        print(f"{split}: {result['written']} written, {result['skipped']} skipped ({result['manifest']})")
