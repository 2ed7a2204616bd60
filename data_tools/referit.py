r"""Convert ReferItGame (the text_objseg distribution) to referring TFRecords.

    python -m data_tools.referit --referit_root REFERIT --output_dir OUT [--splits trainval,test] \
        [--annotation_dir DIR] [--num_shards 8]

Download (used as distributed, nothing to preprocess):
  - Images and masks: `referitdata.tar.gz` of https://github.com/ronghanghu/text_objseg
    (exp-referit/referit-dataset/download_referit_dataset.sh fetches
    http://www.eecs.berkeley.edu/~ronghang/projects/cvpr16_text_obj_retrieval/referitdata.tar.gz);
    extract it into REFERIT so that it holds `images/<image id>.jpg` and `mask/<image id>_<k>.mat`.
  - Queries: `referit_query_<split>.json` (split = trainval, test, train, val, all) from text_objseg's
    `exp-referit/data/` (the same files ship in TF-phrasecut-public's `data/`), in REFERIT or in
    --annotation_dir. Each maps "<image id>_<k>" (region k of the image) to a list of expressions.
  - Optional image lists `referit_<split>_imlist.txt` (one image id per line; the split files of
    https://github.com/ronghanghu/natural-language-object-retrieval `data/split/`), beside the query files.
    When present, queries of images outside the list are skipped and counted; the reference code reads
    only the query file.

The reference trains on trainval and evaluates on test (RMI paper §4.1), the default --splits.

Output: `OUT/<split>-0000i-of-0000N.tfrecord` and `OUT/<split>.manifest.json`, one record per expression
(schema: `tf_recurrent_seg.data.records.referring_example`), dataset "referit". The mask is
`segimg_t == 0` of the region's .mat file (0 marks the region, as in the reference's
`load_referit_gt_mask`). ReferIt has no numeric ids, so they are derived from the key:
ref_id = image_id * 1000 + k, sent_id = ref_id * 1000 + (index of the expression in the key's list);
the record's filename is `<image id>.jpg`. Records are in (image id, k, index) order, so a re-run writes
byte-identical shards.

Skipped, with a warning naming the record and a count in the manifest (never a crash half-way): a missing,
corrupt or truncated image; a missing or unreadable mask file, or one without a 2-D `segimg_t`; a mask
whose size differs from its image; an empty expression; a malformed key or entry; an image outside the
split's image list. Grayscale, palette, RGBA and 16-bit images are converted to 8-bit RGB (stored as PNG).
An all-background mask is kept (the reference trains and evaluates on it) with a warning.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

import numpy as np
import scipy.io
from absl import app, flags, logging

from data_tools.refer import DEFAULT_NUM_SHARDS, BadRecord, has_tokens, load_image
from tf_recurrent_seg.cli.common import run_main
from tf_recurrent_seg.data.records import ShardedRecordWriter, referring_example

DATASET = "referit"
DEFAULT_SPLITS = ("trainval", "test")
KEY_PATTERN = re.compile(r"^(\d+)_(\d+)$")
ID_FACTOR = 1000  # ref_id = image_id * ID_FACTOR + k; sent_id = ref_id * ID_FACTOR + expression index


def query_path(annotation_dir: str, split: str) -> str:
    return os.path.join(annotation_dir, f"referit_query_{split}.json")


def imlist_path(annotation_dir: str, split: str) -> str:
    return os.path.join(annotation_dir, f"referit_{split}_imlist.txt")


def load_queries(path: str) -> dict:
    """The query dict of a `referit_query_<split>.json`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: download the ReferIt query files (see --help)")
    with open(path, encoding="utf-8") as file:
        queries = json.load(file)
    if not isinstance(queries, dict):
        raise ValueError(f"{path} holds a {type(queries).__name__}, expected a dict of '<image id>_<k>' -> expressions")
    return queries


def load_imlist(path: str) -> set[str]:
    """Image ids (as strings, without extension) of an image list file."""
    with open(path, encoding="utf-8") as file:
        names = [line.strip() for line in file if line.strip()]
    return {name[: -len(".jpg")] if name.lower().endswith(".jpg") else name for name in names}


def load_mask(path: str) -> np.ndarray:
    """(H, W) uint8 0/1 mask of a text_objseg .mat file: foreground where `segimg_t == 0`."""
    if not os.path.isfile(path):
        raise BadRecord("missing mask file", path)
    try:
        contents = scipy.io.loadmat(path)
    except Exception as error:  # noqa: BLE001 - any parse failure of an untrusted file is a bad record
        raise BadRecord("unreadable mask file", f"{path}: {error!r}") from None
    segimg = contents.get("segimg_t")
    if not isinstance(segimg, np.ndarray) or segimg.ndim != 2 or segimg.dtype.kind not in "biuf":
        raise BadRecord("malformed mask file", f"{path} has no 2-D numeric segimg_t")
    return (segimg == 0).astype(np.uint8)


def _record_name(key: str, index: int | None = None) -> str:
    return f"referit {key}" + (f" #{index}" if index is not None else "")


def _expressions(value) -> list:
    return value if isinstance(value, list) and value else [None]


def convert_split(
    queries: dict,
    referit_root: str,
    prefix: str,
    split: str,
    imlist: set[str] | None = None,
    num_shards: int = DEFAULT_NUM_SHARDS,
) -> dict:
    """Writes the records of one split under `prefix`; returns the manifest."""
    image_dir, mask_dir = os.path.join(referit_root, "images"), os.path.join(referit_root, "mask")
    source = f"ReferItGame (text_objseg images/, mask/ and referit_query_{split}.json)"
    with ShardedRecordWriter(prefix, num_shards, task="referring", source=source) as writer:

        def skip_key(key: str, reason: str, detail: str = "") -> None:
            # one skip per expression, so that the counts are in records
            for index, _ in enumerate(_expressions(queries[key])):
                writer.skip(_record_name(key, index), reason, detail)

        parsed = []
        for key in queries:
            match = KEY_PATTERN.match(key) if isinstance(key, str) else None
            if match is None:
                skip_key(key, "malformed query key", f"expected '<image id>_<k>', got {key!r}")
            elif not isinstance(queries[key], list) or not queries[key]:
                skip_key(key, "malformed query entry", "not a non-empty list of expressions")
            elif int(match.group(2)) >= ID_FACTOR or len(queries[key]) > ID_FACTOR:
                skip_key(key, "malformed query key", f"region index or expression count not below {ID_FACTOR}")
            elif imlist is not None and match.group(1) not in imlist:
                skip_key(key, "image not in the split's image list", f"image {match.group(1)}")
            else:
                parsed.append((int(match.group(1)), int(match.group(2)), match.group(1), key))
        parsed.sort()

        image_key, image_value = None, None
        for image_id, region, image_name, key in parsed:
            filename = f"{image_name}.jpg"
            try:
                if image_key != image_name:  # keys are sorted by image: read each image once
                    image_key = image_name
                    try:
                        image_value = load_image(os.path.join(image_dir, filename))
                    except BadRecord as skip:
                        image_value = skip
                if isinstance(image_value, BadRecord):
                    raise image_value
                image_bytes, pixels = image_value
                mask = load_mask(os.path.join(mask_dir, f"{key}.mat"))
                if mask.shape != pixels.shape[:2]:
                    raise BadRecord(
                        "mask size differs from image",
                        f"mask {mask.shape[0]}x{mask.shape[1]}, image {pixels.shape[0]}x{pixels.shape[1]}",
                    )
            except BadRecord as skip:
                skip_key(key, skip.reason, skip.detail)
                continue
            if not mask.any():
                logging.warning("%s: the mask is empty (no segimg_t == 0 pixel)", _record_name(key))
            ref_id = image_id * ID_FACTOR + region
            height, width = mask.shape
            for index, expression in enumerate(queries[key]):
                if not isinstance(expression, str):
                    writer.skip(_record_name(key, index), "malformed query entry", repr(expression))
                    continue
                if not has_tokens(expression):
                    writer.skip(_record_name(key, index), "empty expression", repr(expression))
                    continue
                example = referring_example(
                    image_bytes,
                    height,
                    width,
                    filename,
                    mask,
                    expression,
                    ref_id,
                    ref_id * ID_FACTOR + index,
                    DATASET,
                    split,
                )
                writer.write(example)
    with open(f"{prefix}.manifest.json") as file:
        return json.load(file)


def convert(
    referit_root: str,
    output_dir: str,
    splits: Sequence[str] = DEFAULT_SPLITS,
    num_shards: int = DEFAULT_NUM_SHARDS,
    annotation_dir: str | None = None,
) -> dict[str, dict]:
    """Converts ReferItGame splits; returns {split: manifest}.

    Args:
        referit_root: folder with `images/` and `mask/`.
        output_dir: where `<split>-*.tfrecord` and `<split>.manifest.json` go.
        splits: splits whose `referit_query_<split>.json` to convert.
        num_shards: shards per split.
        annotation_dir: folder of the query files and optional image lists (default: referit_root).

    Raises:
        FileNotFoundError, ValueError: missing folders or query files, malformed query files, bad arguments;
        all checked before any output is written. Bad records are skipped, not raised.
    """
    annotation_dir = referit_root if annotation_dir is None else annotation_dir
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}")
    if not splits:
        raise ValueError("no splits to convert")
    for folder in ("images", "mask"):
        if not os.path.isdir(os.path.join(referit_root, folder)):
            raise FileNotFoundError(
                f"{os.path.join(referit_root, folder)} does not exist: extract referitdata.tar.gz (see --help)"
            )
    queries = {split: load_queries(query_path(annotation_dir, split)) for split in splits}
    manifests = {}
    for split in splits:
        imlist = None
        if os.path.isfile(imlist_path(annotation_dir, split)):
            imlist = load_imlist(imlist_path(annotation_dir, split))
        else:
            logging.info("%s not found: converting every query of the split", imlist_path(annotation_dir, split))
        manifests[split] = convert_split(
            queries[split], referit_root, os.path.join(output_dir, split), split, imlist, num_shards
        )
        logging.info(
            "referit %s: %d records, %d skipped",
            split,
            manifests[split]["num_examples"],
            sum(manifests[split]["skipped"].values()),
        )
    return manifests


def _define_flags() -> None:
    # Defined when run as a program only (see data_tools.refer).
    flags.DEFINE_string("referit_root", None, "Folder with images/<id>.jpg and mask/<id>_<k>.mat.")
    flags.DEFINE_string(
        "annotation_dir",
        None,
        "Folder of referit_query_<split>.json and referit_<split>_imlist.txt (default: --referit_root).",
    )
    flags.DEFINE_string("output_dir", None, "Output folder for <split>-*.tfrecord and <split>.manifest.json.")
    flags.DEFINE_list("splits", list(DEFAULT_SPLITS), "Splits to convert (query files referit_query_<split>.json).")
    flags.DEFINE_integer("num_shards", DEFAULT_NUM_SHARDS, "Shards per split.", lower_bound=1)
    flags.mark_flags_as_required(["referit_root", "output_dir"])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    values = flags.FLAGS
    try:
        manifests = convert(
            values.referit_root, values.output_dir, values.splits, values.num_shards, values.annotation_dir
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
