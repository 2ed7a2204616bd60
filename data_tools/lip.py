"""LIP and CIHP human parsing -> TFRecord shards for the LG-LSTM parsing models (`--dataset lip|cihp`).

Neither is in the LG-LSTM paper; LIP is the current single-person human parsing benchmark and CIHP its
multi-person sibling. Both come from the LIP site (http://sysu-hcp.net/lip/, "LIP" and "CIHP" downloads).

LIP (`--dataset lip`): `--data_dir` holds, directly or up to two folder levels down (the archives unpack as
`TrainVal_images/` and `TrainVal_parsing_annotations/`), `train_images/<id>.jpg`, `val_images/<id>.jpg`,
`train_segmentations/<id>.png`, `val_segmentations/<id>.png` (gray PNG, class ids 0-19), `train_id.txt` and
`val_id.txt`. Splits: train, val (the test set has no labels).

CIHP (`--dataset cihp`): `--data_dir` holds `Training/` and `Validation/` (e.g. `instance-level_human_parsing/`),
each with `Images/<id>.jpg`, `Category_ids/<id>.png` (class ids 0-19) and `train_id.txt` / `val_id.txt`.
Splits: train, val.

Records are converted in the order of the id file; when an id file is absent, the sorted image ids are used
(and classes.json says so). An id listed whose image or label map is missing is skipped, as is an id listed
twice (second occurrence).

Classes (20, the same for both, `defaults.LIP_CLASSES`): background, hat, hair, glove, sunglasses,
upper-clothes, dress, coat, socks, pants, jumpsuits, scarf, skirt, face, left-arm, right-arm, left-leg,
right-leg, left-shoe, right-shoe. A horizontal flip must swap 14<->15, 16<->17, 18<->19 (`LEFT_RIGHT_PAIRS`,
written to `<output_dir>/classes.json` with the flip permutation).

Usage:
    python -m data_tools.lip --dataset lip --data_dir /data/LIP --output_dir data/lip
    python -m data_tools.lip --dataset cihp --data_dir /data/instance-level_human_parsing --output_dir data/cihp
"""

import dataclasses
import os
from collections.abc import Sequence

from absl import flags, logging

from data_tools import parsing_common as common
from tf_recurrent_seg.cli.common import run_main
from tf_recurrent_seg.defaults import LIP_CLASSES, LIP_LEFT_RIGHT_PAIRS

CLASS_NAMES = LIP_CLASSES
LEFT_RIGHT_PAIRS = LIP_LEFT_RIGHT_PAIRS
DATASETS = ("lip", "cihp")


@dataclasses.dataclass(frozen=True)
class SplitLayout:
    """Where one split of a dataset lives, as names `parsing_common.locate` looks for."""

    image_dir: str
    label_dir: str
    id_file: str
    parent: str | None = None  # CIHP: the split's folder (Training/, Validation/)


LAYOUTS = {
    "lip": {
        "train": SplitLayout("train_images", "train_segmentations", "train_id.txt"),
        "val": SplitLayout("val_images", "val_segmentations", "val_id.txt"),
    },
    "cihp": {
        "train": SplitLayout("Images", "Category_ids", "train_id.txt", parent="Training"),
        "val": SplitLayout("Images", "Category_ids", "val_id.txt", parent="Validation"),
    },
}


def _split_records(data_dir: str, dataset: str, split: str) -> tuple[list[common.ParsingRecord], list[str], str]:
    """The records of one split, the ids, and how the ids were found."""
    layout = LAYOUTS[dataset][split]
    root = data_dir
    if layout.parent is not None:
        root = common.require(data_dir, layout.parent, f"{dataset.upper()} {split} folder")
        image_dir = os.path.join(root, layout.image_dir)
        label_dir = os.path.join(root, layout.label_dir)
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"{dataset.upper()} {split} images: {image_dir} does not exist")
        if not os.path.isdir(label_dir):
            raise FileNotFoundError(f"{dataset.upper()} {split} label maps: {label_dir} does not exist")
        id_file = os.path.join(root, layout.id_file)
        id_file = id_file if os.path.isfile(id_file) else common.locate(data_dir, layout.id_file, directory=False)
    else:
        image_dir = common.require(data_dir, layout.image_dir, f"LIP {split} images")
        label_dir = common.require(data_dir, layout.label_dir, f"LIP {split} label maps")
        id_file = common.locate(data_dir, layout.id_file, directory=False)
    if id_file is not None:
        listed, id_source = common.read_id_list(id_file), f"ids in the order of {id_file}"
    else:
        listed, id_source = (
            common.file_stems(image_dir, ".jpg"),
            f"no {layout.id_file}: sorted ids of {image_dir}/*.jpg",
        )
        logging.warning("%s %s: %s", dataset, split, id_source)
    ids, repeated = common.unique_in_order(listed)
    records = [
        common.image_label_record(
            record_id, os.path.join(image_dir, f"{record_id}.jpg"), os.path.join(label_dir, f"{record_id}.png")
        )
        for record_id in ids
    ]
    records += [
        common.missing_listed_record(record_id, "id listed twice (first occurrence kept)") for record_id in repeated
    ]
    return records, ids, f"images {image_dir}, label maps {label_dir}, {id_source}"


def convert_lip(data_dir: str, output_dir: str, dataset: str = "lip", num_shards: int = 4) -> dict[str, dict]:
    """Converts LIP or CIHP (train and val); returns per split {"written", "skipped", "manifest"}.

    Raises:
        ValueError: unknown dataset.
        FileNotFoundError: a split's image or label folder is not under `data_dir`.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    results, splits, sources = {}, {}, {}
    for split in LAYOUTS[dataset]:
        records, ids, source = _split_records(data_dir, dataset, split)
        results[split] = common.write_split(
            os.path.join(output_dir, split),
            records,
            num_shards=num_shards,
            dataset=dataset,
            split=split,
            class_names=CLASS_NAMES,
            source=f"{dataset.upper()} {split}: {source}",
        )
        splits[split], sources[split] = ids, source
        logging.info("%s %s: %s", dataset, split, results[split])
    common.write_dataset_info(
        output_dir,
        dataset=dataset,
        class_names=CLASS_NAMES,
        left_right_pairs=LEFT_RIGHT_PAIRS,
        splits=splits,
        results=results,
        extra={"sources": sources},
    )
    return results


def _define_flags() -> None:
    flags.DEFINE_enum("dataset", "lip", DATASETS, "Which dataset --data_dir holds.")
    flags.DEFINE_string("data_dir", None, "The unpacked LIP or CIHP download (see the module help).")
    flags.DEFINE_string("output_dir", None, "Where the shards, manifests and classes.json are written.")
    flags.DEFINE_integer("num_shards", 4, "Shards per split.")
    flags.mark_flags_as_required(["data_dir", "output_dir"])


def main(argv: Sequence[str]) -> None:
    del argv
    flag_values = flags.FLAGS
    results = convert_lip(flag_values.data_dir, flag_values.output_dir, flag_values.dataset, flag_values.num_shards)
    common.print_split_results(results)


def run() -> None:
    _define_flags()
    run_main(main)


if __name__ == "__main__":
    run()
