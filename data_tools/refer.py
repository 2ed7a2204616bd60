r"""Convert RefCOCO, RefCOCO+ and RefCOCOg (REFER files + COCO train2014 images) to referring TFRecords.

    python -m data_tools.refer --refer_root REFER_DATA --image_dir COCO/train2014 --output_dir OUT \
        --dataset refcoco --split_by unc [--splits val,testA] [--num_shards 8]

Download (the converter reads them as they come, nothing to preprocess):
  - REFER annotations, https://github.com/lichengunc/refer ("Download"): refcoco.zip, refcoco+.zip and
    refcocog.zip from https://bvisionweb1.cs.unc.edu/licheng/referit/data/ ; unzip all into REFER_DATA so
    that it holds `refcoco/refs(unc).p`, `refcoco/instances.json`, `refcoco+/refs(unc).p`,
    `refcocog/refs(google).p`, `refcocog/refs(umd).p`, ...
  - COCO train2014 images, https://cocodataset.org/#download
    (http://images.cocodataset.org/zips/train2014.zip): --image_dir is the unzipped `train2014/` folder.

Datasets (RMI paper §4.1): `--dataset refcoco --split_by unc` (UNC: train, val, testA, testB),
`refcoco+ unc` (UNC+), `refcocog google` (Google-Ref: train, val; the paper's) and `refcocog umd` (train,
val, test; what later work reports). `refcoco google` is accepted too.

Output: `OUT/<split>-0000i-of-0000N.tfrecord` and `OUT/<split>.manifest.json` for each split, one record
per sentence (schema: `tf_recurrent_seg.data.records.referring_example`): the image (original JPEG bytes,
or PNG when it had to be converted), the mask of the ref's annotation at the image's resolution, the
expression = the sentence's REFER-normalised `sent` field (lowercased, punctuation-cleaned by REFER; use
`--expression_field raw` for the annotators' raw text), ref_id, sent_id, dataset (`refcoco_unc`, ...)
and split. Records are in ref_id then sent_id order, so a re-run writes byte-identical shards.

Masks: polygons are rasterised with pycocotools (`frPyObjects` + `decode`) and the polygons of one object
are combined by union (not summed); uncompressed (counts-list) RLE goes through `frPyObjects`, compressed
(string) RLE is decoded directly; RLE counts are checked to cover exactly height x width pixels first
(pycocotools returns garbage for short counts). The image's size comes from instances.json and must match
the image file.

Skipped, with a warning naming the record and a count in the manifest (never a crash half-way): a missing,
corrupt or truncated image; an annotation id or image id absent from instances.json; a mask whose size
differs from its image; a malformed or degenerate segmentation; an empty expression (no token after the
project's tokenizer); a malformed ref or sentence entry. Grayscale, palette, RGBA and 16-bit images are
converted to 8-bit RGB (stored as PNG). The refs pickle is loaded with a restricted unpickler that refuses
to import anything (a pickle can execute code).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from absl import app, flags, logging
from pycocotools import mask as coco_mask

from data_tools.restricted_pickle import load_restricted_pickle
from tf_recurrent_seg.cli.common import run_main
from tf_recurrent_seg.data.image_io import BadRecord, read_image
from tf_recurrent_seg.data.records import ShardedRecordWriter, referring_example
from tf_recurrent_seg.text import tokenize

# dataset -> the split_by values REFER distributes for it.
SPLIT_BYS = {"refcoco": ("unc", "google"), "refcoco+": ("unc",), "refcocog": ("google", "umd")}
DATASET_NAMES = {"refcoco": "RefCOCO", "refcoco+": "RefCOCO+", "refcocog": "RefCOCOg"}
DEFAULT_NUM_SHARDS = 8


def has_tokens(expression: Any) -> bool:
    """Whether an expression is a str with at least one token after the project's tokenizer."""
    return isinstance(expression, str) and bool(tokenize(expression))


def load_image(path: str) -> tuple[bytes, np.ndarray]:
    """`read_image` with the skip categories of the converters: missing file, corrupt or truncated image."""
    if not os.path.isfile(path):
        raise BadRecord("missing image file", path)
    try:
        return read_image(path)
    except BadRecord as error:
        raise BadRecord(error.reason, f"{path}: {error.detail}") from None


# ---------------------------------------------------------------------------------------------------------
# COCO segmentations


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _compressed_rle_counts(counts: str) -> list[int]:
    """Run lengths of a COCO compressed RLE string (the format of pycocotools' `rleToString`).

    Each count is a variable-length little-endian sequence of 5-bit groups stored as chr(48 + group), bit
    0x20 meaning "more groups follow" and bit 0x10 of the last group the sign; from the third count on, the
    stored value is the difference to the count two places back.
    """
    values: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise BadRecord("malformed segmentation", "compressed RLE ends inside a count")
            group = ord(counts[position]) - 48
            if not 0 <= group < 64:
                raise BadRecord("malformed segmentation", f"invalid character {counts[position]!r} in compressed RLE")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(values) > 2:
            value += values[-2]
        values.append(value)
    return values


def _check_counts(counts: Sequence[int], height: int, width: int) -> None:
    if any(count < 0 for count in counts):
        raise BadRecord("malformed segmentation", "negative run length in RLE")
    if sum(counts) != height * width:
        raise BadRecord("malformed segmentation", f"RLE covers {sum(counts)} pixels, the image has {height}x{width}")


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The (height, width) uint8 0/1 mask of a COCO `segmentation` (polygons, uncompressed or compressed RLE).

    Polygons: each is a flat [x1, y1, x2, y2, ...] list; they are rasterised with pycocotools and combined
    by union. Polygons with fewer than 3 points have no area and are left out (pycocotools would misread a
    4-number one as a box); an odd number of coordinates is malformed.

    Raises:
        BadRecord: malformed or degenerate segmentation, or an RLE whose size differs from the image.
    """
    if isinstance(segmentation, list):
        polygons = []
        for polygon in segmentation:
            if not isinstance(polygon, (list, tuple)) or not all(_is_number(value) for value in polygon):
                raise BadRecord("malformed segmentation", "a polygon is not a list of finite numbers")
            if len(polygon) % 2:
                raise BadRecord(
                    "malformed segmentation", f"a polygon has an odd number ({len(polygon)}) of coordinates"
                )
            if len(polygon) >= 6:
                polygons.append([float(value) for value in polygon])
        if not polygons:
            raise BadRecord("degenerate segmentation", "no polygon with 3 or more points")
        masks = coco_mask.decode(coco_mask.frPyObjects(polygons, height, width))  # (height, width, n)
        return masks.max(axis=2).astype(np.uint8)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = segmentation["size"]
        if not (
            isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, numbers.Integral) for v in size)
        ):
            raise BadRecord("malformed segmentation", f"RLE size {size!r} is not [height, width]")
        if list(size) != [height, width]:
            raise BadRecord("mask size differs from image", f"RLE is {size[0]}x{size[1]}, the image {height}x{width}")
        counts = segmentation["counts"]
        if isinstance(counts, (list, tuple)):
            if not all(isinstance(count, numbers.Integral) and not isinstance(count, bool) for count in counts):
                raise BadRecord("malformed segmentation", "RLE counts are not integers")
            _check_counts(counts, height, width)
            rle = coco_mask.frPyObjects({"size": [height, width], "counts": [int(c) for c in counts]}, height, width)
        elif isinstance(counts, (str, bytes)):
            text = counts.decode("latin1") if isinstance(counts, bytes) else counts
            _check_counts(_compressed_rle_counts(text), height, width)
            rle = {"size": [height, width], "counts": text.encode("latin1")}
        else:
            raise BadRecord("malformed segmentation", f"RLE counts of type {type(counts).__name__}")
        mask = coco_mask.decode(rle)
        return (mask.reshape(height, width) > 0).astype(np.uint8)
    raise BadRecord("malformed segmentation", f"neither polygons nor RLE: {type(segmentation).__name__}")


# ---------------------------------------------------------------------------------------------------------
# REFER files


def refs_path(refer_root: str, dataset: str, split_by: str) -> str:
    return os.path.join(refer_root, dataset, f"refs({split_by}).p")


def instances_path(refer_root: str, dataset: str) -> str:
    return os.path.join(refer_root, dataset, "instances.json")


def load_refs(path: str) -> list[dict]:
    """The refs list of a REFER `refs(<split_by>).p`, loaded with the restricted unpickler."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: download the REFER data (see --help)")
    refs = load_restricted_pickle(path)
    if not isinstance(refs, list):
        raise ValueError(f"{path} holds a {type(refs).__name__}, expected the REFER list of refs")
    return refs


def load_instances(path: str) -> tuple[dict[int, dict], dict[int, dict]]:
    """(images by id, annotations by id) of a COCO-style instances.json."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: download the REFER data (see --help)")
    with open(path) as file:
        instances = json.load(file)
    if not isinstance(instances, dict) or "images" not in instances or "annotations" not in instances:
        raise ValueError(f"{path} is not a COCO instances file (no 'images' and 'annotations')")
    images = {image["id"]: image for image in instances["images"] if isinstance(image, dict) and "id" in image}
    annotations = {ann["id"]: ann for ann in instances["annotations"] if isinstance(ann, dict) and "id" in ann}
    return images, annotations


def ref_splits(refs: Iterable[dict]) -> list[str]:
    return sorted({ref["split"] for ref in refs if isinstance(ref, dict) and isinstance(ref.get("split"), str)})


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, numbers.Integral) else (1, 0, str(value))


class _ImageCache:
    """Keeps the last image read: refs are in ref_id order, and the refs of one image are mostly adjacent."""

    def __init__(self):
        self.path: str | None = None
        self.value: tuple[bytes, np.ndarray] | BadRecord | None = None

    def get(self, path: str) -> tuple[bytes, np.ndarray]:
        if path != self.path:
            self.path = path
            try:
                self.value = load_image(path)
            except BadRecord as skip:
                self.value = skip
        if isinstance(self.value, BadRecord):
            raise self.value
        return self.value


def _prepare_ref(ref: dict, images: dict, annotations: dict, image_dir: str, cache: _ImageCache):
    """(image bytes, height, width, file name, mask) of a ref; BadRecord when it cannot be converted."""
    for key in ("ref_id", "ann_id", "image_id"):
        if key not in ref:
            raise BadRecord("malformed ref", f"no '{key}'")
    annotation = annotations.get(ref["ann_id"])
    if annotation is None:
        raise BadRecord("annotation missing from instances.json", f"ann_id {ref['ann_id']}")
    if annotation.get("image_id") != ref["image_id"]:
        raise BadRecord(
            "annotation belongs to another image", f"ann_id {ref['ann_id']} is on image {annotation.get('image_id')}"
        )
    image_info = images.get(ref["image_id"])
    if image_info is None:
        raise BadRecord("image missing from instances.json", f"image_id {ref['image_id']}")
    file_name, height, width = image_info.get("file_name"), image_info.get("height"), image_info.get("width")
    if not isinstance(file_name, str) or not isinstance(height, int) or not isinstance(width, int):
        raise BadRecord("malformed image entry in instances.json", f"image_id {ref['image_id']}")
    if "segmentation" not in annotation:
        raise BadRecord("malformed segmentation", f"ann_id {ref['ann_id']} has no segmentation")
    mask = decode_segmentation(annotation["segmentation"], height, width)
    image_bytes, pixels = cache.get(os.path.join(image_dir, file_name))
    if pixels.shape[:2] != (height, width):
        raise BadRecord(
            "mask size differs from image",
            f"{file_name} is {pixels.shape[0]}x{pixels.shape[1]}, instances.json says {height}x{width}",
        )
    if not mask.any():
        logging.warning("ref %s (ann_id %s): the mask is empty", ref["ref_id"], ref["ann_id"])
    return image_bytes, height, width, file_name, mask


def _record_name(dataset_name: str, ref: dict, sentence: Any = None) -> str:
    name = f"{dataset_name} ref_id {ref.get('ref_id')}"
    if isinstance(sentence, dict):
        name += f" sent_id {sentence.get('sent_id')}"
    return name


def convert_split(
    refs: Sequence[dict],
    images: dict,
    annotations: dict,
    image_dir: str,
    prefix: str,
    split: str,
    dataset_name: str,
    source: str,
    num_shards: int = DEFAULT_NUM_SHARDS,
    expression_field: str = "sent",
) -> dict:
    """Writes the records of one split (refs already filtered to it) under `prefix`; returns the manifest."""
    refs = sorted(refs, key=lambda ref: _sort_key(ref.get("ref_id")))
    cache = _ImageCache()
    with ShardedRecordWriter(prefix, num_shards, task="referring", source=source) as writer:
        for ref in refs:
            sentences = ref.get("sentences")
            if not isinstance(sentences, list) or not sentences:
                writer.skip(_record_name(dataset_name, ref), "malformed ref", "no sentences")
                continue
            sentences = sorted(sentences, key=lambda s: _sort_key(s.get("sent_id") if isinstance(s, dict) else None))
            try:
                image_bytes, height, width, file_name, mask = _prepare_ref(ref, images, annotations, image_dir, cache)
            except BadRecord as skip:
                for sentence in sentences:
                    writer.skip(_record_name(dataset_name, ref, sentence), skip.reason, skip.detail)
                continue
            for sentence in sentences:
                name = _record_name(dataset_name, ref, sentence)
                if not isinstance(sentence, dict) or not isinstance(sentence.get("sent_id"), numbers.Integral):
                    writer.skip(name, "malformed sentence")
                    continue
                expression = sentence.get(expression_field)
                if not has_tokens(expression):
                    writer.skip(name, "empty expression", f"{expression_field}={expression!r}")
                    continue
                example = referring_example(
                    image_bytes,
                    height,
                    width,
                    file_name,
                    mask,
                    expression,
                    int(ref["ref_id"]),
                    int(sentence["sent_id"]),
                    dataset_name,
                    split,
                )
                writer.write(example)
    with open(f"{prefix}.manifest.json") as file:
        return json.load(file)


def convert(
    refer_root: str,
    image_dir: str,
    output_dir: str,
    dataset: str,
    split_by: str,
    splits: Sequence[str] | None = None,
    num_shards: int = DEFAULT_NUM_SHARDS,
    expression_field: str = "sent",
) -> dict[str, dict]:
    """Converts one REFER dataset/split_by; returns {split: manifest}.

    Args:
        refer_root: folder holding `<dataset>/refs(<split_by>).p` and `<dataset>/instances.json`.
        image_dir: COCO train2014 images.
        output_dir: where `<split>-*.tfrecord` and `<split>.manifest.json` go.
        dataset: "refcoco", "refcoco+" or "refcocog".
        split_by: "unc", "google" or "umd" (see `SPLIT_BYS`).
        splits: splits to convert; None: every split present in the refs.
        num_shards: shards per split.
        expression_field: "sent" (REFER-normalised, default) or "raw".

    Raises:
        ValueError: unknown dataset/split_by/split; FileNotFoundError: missing REFER files. Both before any
        output is written. Bad records are skipped, not raised.
    """
    if dataset not in SPLIT_BYS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(SPLIT_BYS)}")
    if split_by not in SPLIT_BYS[dataset]:
        raise ValueError(f"{dataset} is distributed with split_by {list(SPLIT_BYS[dataset])}, not {split_by!r}")
    if expression_field not in ("sent", "raw"):
        raise ValueError(f"expression_field must be 'sent' or 'raw', got {expression_field!r}")
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image directory {image_dir} does not exist: download COCO train2014 (see --help)")
    refs = load_refs(refs_path(refer_root, dataset, split_by))
    images, annotations = load_instances(instances_path(refer_root, dataset))
    available = ref_splits(refs)
    splits = available if splits is None else list(splits)
    unknown = [split for split in splits if split not in available]
    if unknown:
        raise ValueError(f"splits {unknown} are not in refs({split_by}).p of {dataset}, which has {available}")
    dataset_name = f"{dataset}_{split_by}"
    source = (
        f"{DATASET_NAMES[dataset]} ({dataset}/refs({split_by}).p and instances.json of REFER, COCO train2014 images)"
    )
    manifests = {}
    for split in splits:
        split_refs = [ref for ref in refs if isinstance(ref, dict) and ref.get("split") == split]
        prefix = os.path.join(output_dir, split)
        manifests[split] = convert_split(
            split_refs,
            images,
            annotations,
            image_dir,
            prefix,
            split,
            dataset_name,
            source,
            num_shards,
            expression_field,
        )
        logging.info(
            "%s %s: %d records, %d skipped",
            dataset_name,
            split,
            manifests[split]["num_examples"],
            sum(manifests[split]["skipped"].values()),
        )
    return manifests


def _define_flags() -> None:
    # Defined when run as a program only, so that importing this module (tests, data_tools.referit) does
    # not clash with the flags of other tools.
    flags.DEFINE_string(
        "refer_root", None, "REFER data folder holding <dataset>/refs(<split_by>).p and <dataset>/instances.json."
    )
    flags.DEFINE_string("image_dir", None, "COCO train2014 image folder.")
    flags.DEFINE_string("output_dir", None, "Output folder for <split>-*.tfrecord and <split>.manifest.json.")
    flags.DEFINE_enum("dataset", None, sorted(SPLIT_BYS), "REFER dataset.")
    flags.DEFINE_enum(
        "split_by", None, ["unc", "google", "umd"], "REFER split: refcoco/refcoco+ unc, refcocog google or umd."
    )
    flags.DEFINE_list("splits", None, "Splits to convert (default: every split in the refs file).")
    flags.DEFINE_integer("num_shards", DEFAULT_NUM_SHARDS, "Shards per split.", lower_bound=1)
    flags.DEFINE_enum("expression_field", "sent", ["sent", "raw"], "Sentence field used as the expression.")
    flags.mark_flags_as_required(["refer_root", "image_dir", "output_dir", "dataset", "split_by"])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    values = flags.FLAGS
    try:
        manifests = convert(
            values.refer_root,
            values.image_dir,
            values.output_dir,
            values.dataset,
            values.split_by,
            values.splits,
            values.num_shards,
            values.expression_field,
        )
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from None
    for split, manifest in manifests.items():
        print(f"{split}: {manifest['num_examples']} records, skipped {manifest['skipped'] or 'none'}")


def run() -> None:
    """Console-script entry point."""
    _define_flags()
    run_main(main)


if __name__ == "__main__":
    run()
