"""PASCAL-Part Horse-Cow (Wang & Yuille 2015) -> TFRecord shards for the LG-LSTM parsing models.

Download: the PASCAL-Part annotations (`trainval.tar.gz`, http://roozbehm.info/pascal-parts/pascal-parts.html),
which unpack to `Annotations_Part/<id>.mat`, and the PASCAL VOC 2010 images (`VOCtrainval_03-May-2010.tar`,
http://host.robots.ox.ac.uk/pascal/VOC/voc2010/), which unpack to `VOCdevkit/VOC2010/JPEGImages/<id>.jpg`.

Split lists: the LG-LSTM paper uses the Horse-Cow split of Wang & Yuille (CVPR 2015, "Semantic part
segmentation using compositional model combining shape and appearance"): 294 train and 227 test images over
horse and cow. The lists are not distributed with PASCAL-Part or with the paper: obtain them from Wang & Yuille
and pass them as `--train_ids` / `--test_ids` (text files, one VOC image id such as `2008_000027` per line; a
first column is read, `#` starts a comment). Any other id lists work the same way.

Usage:
    python -m data_tools.pascal_part --pascal_part_dir /data/pascal_part --voc_dir /data/VOCdevkit/VOC2010 \\
        --classes horse --train_ids horse_train.txt --test_ids horse_test.txt --output_dir data/horse

Labels (5 classes): background 0, head 1, body 2, leg 3, tail 4. Part merge (as in LG-LSTM paper §4.1's Horse-Cow
set-up): head = head, leye, reye, lear, rear, muzzle, lhorn, rhorn; body = torso, neck; leg = lfuleg, lflleg,
rfuleg, rflleg, lbuleg, lblleg, rbuleg, rblleg, lfho, rfho, lbho, rbho; tail = tail. Choices made here:
- Pixels of an object of a `--classes` class (its silhouette `mask`) that no part covers: background by default
  (the object's outline without a part label, e.g. a part-less small animal, counts as background as in the
  Horse-Cow ground truth); `--unlabelled_silhouette=ignore` makes them 255 instead.
- Overlapping parts (the polygons of PASCAL-Part overlap at their borders): the result does not depend on the
  order of objects or parts; per pixel, tail beats leg beats head beats body (thin parts are drawn over the
  large torso/neck outlines).
- A part name outside the merge table (none in horse/cow, but e.g. another class's names) is not guessed: its
  pixels are 255 unless a known part covers them, and classes.json lists the names.
- Objects of other classes (a rider, a dog): background.
- An id whose annotation has no object of `--classes` is skipped (the reason says so), as are a missing
  annotation or image, an image of another size than the masks, and an id listed twice.
"""

import os
from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.io
from absl import app, flags, logging

from data_tools import parsing_common as common
from tf_recurrent_seg.cli.common import run_main
from tf_recurrent_seg.data.image_io import BadRecord, read_image
from tf_recurrent_seg.data.records import IGNORE_LABEL
from tf_recurrent_seg.defaults import HORSE_COW_CLASSES

DATASET = "pascal_part"
CLASS_NAMES = HORSE_COW_CLASSES
LEFT_RIGHT_PAIRS = ()  # no left/right classes
PART_GROUPS = {
    "head": ("head", "leye", "reye", "lear", "rear", "muzzle", "lhorn", "rhorn"),
    "body": ("torso", "neck"),
    "leg": (
        "lfuleg",
        "lflleg",
        "rfuleg",
        "rflleg",
        "lbuleg",
        "lblleg",
        "rbuleg",
        "rblleg",
        "lfho",
        "rfho",
        "lbho",
        "rbho",
    ),
    "tail": ("tail",),
}
PART_TO_CLASS = {part: CLASS_NAMES.index(group) for group, parts in PART_GROUPS.items() for part in parts}
PAINT_ORDER = ("body", "head", "leg", "tail")  # later wins where parts overlap
UNLABELLED_SILHOUETTE = ("background", "ignore")


def _as_list(value) -> list:
    """A MATLAB struct array as loaded with squeeze_me (a single struct, an array, or empty) as a list."""
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def _mask(struct, what: str) -> np.ndarray:
    mask = getattr(struct, "mask", None)
    if mask is None:
        raise BadRecord(f"{what} has no mask")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise BadRecord(f"{what} mask has shape {mask.shape}, not (H, W)")
    return mask > 0


def load_annotation(path: str) -> list:
    """The `anno.objects` of an Annotations_Part .mat file, as a list of scipy mat_structs."""
    if not os.path.isfile(path):
        raise BadRecord("missing annotation file", str(path))
    try:
        anno = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["anno"]
    except (ValueError, KeyError, OSError, TypeError, NotImplementedError) as error:
        raise BadRecord("unreadable PASCAL-Part annotation", f"{path}: {error!r}") from None
    objects = getattr(anno, "objects", None)
    if objects is None:
        raise BadRecord("annotation has no objects", str(path))
    return [obj for obj in _as_list(objects) if hasattr(obj, "mask")]


def merge_parts(
    objects: Sequence, classes: Sequence[str], unlabelled_silhouette: str = "background", unknown: Counter | None = None
) -> np.ndarray:
    """The (H, W) uint8 label map of the objects of `classes` (see the module docstring for the rules).

    Raises:
        BadRecord: no object of `classes`, or masks of different sizes.
    """
    selected = [obj for obj in objects if str(getattr(obj, "class", "")) in classes]
    if not selected:
        found = sorted({str(getattr(obj, "class", "?")) for obj in objects})
        raise BadRecord(f"no {'/'.join(classes)} object in the annotation", f"objects: {found}")
    shape = None
    silhouette, unknown_parts = None, None
    group_masks = {group: None for group in PAINT_ORDER}
    for k, obj in enumerate(selected):
        mask = _mask(obj, f"object {k}")
        if shape is None:
            shape = mask.shape
            silhouette = np.zeros(shape, bool)
            unknown_parts = np.zeros(shape, bool)
            group_masks = {group: np.zeros(shape, bool) for group in PAINT_ORDER}
        if mask.shape != shape:
            raise BadRecord(f"object masks of different sizes {shape} and {mask.shape}")
        silhouette |= mask
        for p, part in enumerate(_as_list(getattr(obj, "parts", np.zeros(0)))):
            name = str(getattr(part, "part_name", ""))
            part_mask = _mask(part, f"object {k} part {p} ({name})")
            if part_mask.shape != shape:
                raise BadRecord(f"part {name} mask is {part_mask.shape}, its object's is {shape}")
            if name in PART_TO_CLASS:
                group_masks[CLASS_NAMES[PART_TO_CLASS[name]]] |= part_mask
            else:
                unknown_parts |= part_mask
                if unknown is not None:
                    unknown[name] += 1
    labels = np.zeros(shape, np.uint8)
    if unlabelled_silhouette == "ignore":
        labels[silhouette] = IGNORE_LABEL
    labels[unknown_parts] = IGNORE_LABEL
    for group in PAINT_ORDER:
        labels[group_masks[group]] = CLASS_NAMES.index(group)
    return labels


def convert_pascal_part(
    pascal_part_dir: str,
    voc_dir: str,
    output_dir: str,
    split_ids: dict[str, str],
    classes: Sequence[str] = ("horse", "cow"),
    num_shards: int = 4,
    unlabelled_silhouette: str = "background",
) -> dict[str, dict]:
    """Converts the ids of each split (`{"train": ids_file, "test": ids_file}`); returns per split counts.

    Raises:
        ValueError: no split, or a bad `unlabelled_silhouette`.
        FileNotFoundError: Annotations_Part, JPEGImages or an id list is missing.
    """
    if unlabelled_silhouette not in UNLABELLED_SILHOUETTE:
        raise ValueError(f"unlabelled_silhouette must be one of {UNLABELLED_SILHOUETTE}, got {unlabelled_silhouette!r}")
    if not split_ids:
        raise ValueError("give at least one id list (--train_ids, --test_ids)")
    annotation_dir = common.require(pascal_part_dir, "Annotations_Part", "PASCAL-Part annotations")
    image_dir = common.require(voc_dir, "JPEGImages", "PASCAL VOC 2010 images")
    classes = tuple(classes)
    unknown: Counter = Counter()

    def record(record_id: str) -> common.ParsingRecord:
        def load():
            labels = merge_parts(
                load_annotation(os.path.join(annotation_dir, f"{record_id}.mat")),
                classes,
                unlabelled_silhouette,
                unknown,
            )
            image_bytes, pixels = read_image(os.path.join(image_dir, f"{record_id}.jpg"))
            return image_bytes, pixels, labels

        return common.ParsingRecord(name=record_id, filename=f"{record_id}.jpg", load=load)

    results, splits = {}, {}
    for split, ids_file in split_ids.items():
        ids, repeated = common.unique_in_order(common.read_id_list(ids_file))
        records = [record(record_id) for record_id in ids]
        records += [
            common.missing_listed_record(record_id, "id listed twice (first occurrence kept)") for record_id in repeated
        ]
        results[split] = common.write_split(
            os.path.join(output_dir, split),
            records,
            num_shards=num_shards,
            dataset=DATASET,
            split=split,
            class_names=CLASS_NAMES,
            source=(
                f"PASCAL-Part {annotation_dir} + VOC2010 {image_dir}, classes {','.join(classes)}, ids {ids_file}, "
                f"unlabelled silhouette = {unlabelled_silhouette}"
            ),
        )
        splits[split] = ids
        logging.info("PASCAL-Part %s: %s", split, results[split])
    if unknown:
        logging.warning("part names outside the merge table (pixels set to 255): %s", dict(unknown))
    common.write_dataset_info(
        output_dir,
        dataset=DATASET,
        class_names=CLASS_NAMES,
        left_right_pairs=LEFT_RIGHT_PAIRS,
        splits=splits,
        results=results,
        extra={
            "pascal_part": {
                "classes": list(classes),
                "part_groups": {group: list(parts) for group, parts in PART_GROUPS.items()},
                "paint_order": list(PAINT_ORDER),
                "unlabelled_silhouette": unlabelled_silhouette,
                "unknown_part_names": dict(unknown),
                "id_files": dict(split_ids),
            }
        },
    )
    return results


def _define_flags() -> None:
    flags.DEFINE_string("pascal_part_dir", None, "Folder holding Annotations_Part/ (PASCAL-Part trainval.tar.gz).")
    flags.DEFINE_string("voc_dir", None, "Folder holding JPEGImages/ of PASCAL VOC 2010 (VOCdevkit/VOC2010).")
    flags.DEFINE_string("output_dir", None, "Where the shards, manifests and classes.json are written.")
    flags.DEFINE_list("classes", ["horse", "cow"], "PASCAL classes whose parts are labelled.")
    flags.DEFINE_string("train_ids", None, "Train id list (Wang & Yuille's Horse-Cow list; users supply it).")
    flags.DEFINE_string("test_ids", None, "Test id list (Wang & Yuille's Horse-Cow list; users supply it).")
    flags.DEFINE_integer("num_shards", 4, "Shards per split.")
    flags.DEFINE_enum(
        "unlabelled_silhouette", "background", UNLABELLED_SILHOUETTE, "Label of object pixels covered by no part."
    )
    flags.mark_flags_as_required(["pascal_part_dir", "voc_dir", "output_dir"])


def main(argv: Sequence[str]) -> None:
    del argv
    flag_values = flags.FLAGS
    split_ids = {
        split: path for split, path in (("train", flag_values.train_ids), ("test", flag_values.test_ids)) if path
    }
    if not split_ids:
        raise app.UsageError("give --train_ids and/or --test_ids (the Wang & Yuille Horse-Cow lists)")
    results = convert_pascal_part(
        flag_values.pascal_part_dir,
        flag_values.voc_dir,
        flag_values.output_dir,
        split_ids,
        flag_values.classes,
        flag_values.num_shards,
        flag_values.unlabelled_silhouette,
    )
    common.print_split_results(results)


def run() -> None:
    _define_flags()
    run_main(main)


if __name__ == "__main__":
    run()
