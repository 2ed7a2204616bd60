"""ATR human parsing (Liang et al. 2015) -> TFRecord shards for the LG-LSTM parsing models.

Download: the ATR release ("humanparsing", from the dataset authors' page
https://github.com/lemondan/HumanParsing-Dataset), unpacked so that `--data_dir` holds (directly or up to two
folder levels down) `JPEGImages/<id>.jpg` and `SegmentationClassAug/<id>.png` (class ids 0-17, palette or gray).

Usage:
    python -m data_tools.atr --data_dir /data/humanparsing --output_dir data/atr [--num_shards 4]

Classes (18, `defaults.ATR_CLASSES`): background, hat, hair, sunglass, upper-clothes, skirt, pants, dress,
belt, left-shoe, right-shoe, face, left-leg, right-leg, left-arm, right-arm, bag, scarf. A horizontal flip
must swap 9<->10, 12<->13, 14<->15 (`LEFT_RIGHT_PAIRS`, written to `<output_dir>/classes.json`).

Split: ATR ships no split files, and the paper's 6000 train / 700 val / 1000 test lists are not published.
This converter takes the union of the image and label ids, sorts them as strings (Python `sorted`), and cuts
the sorted list into contiguous blocks: the first 6000 ids are `train`, the next 700 `val`, the next 1000
`test` (`--split_sizes`). Ids beyond the sum (the full release has more images than 7700) form `extra`,
written only with `--write_extra`. With fewer ids than the sum, every split is scaled in proportion
(largest remainders, so the sizes add up to the number of ids). The split is computed before any record is
read, so a bad file never moves an id to another split. The rule and the ids of every split are written to
`<output_dir>/classes.json` and `<output_dir>/<split>_ids.txt`, and each manifest's `source` says it.

Output: `<output_dir>/<split>-0000i-of-0000N.tfrecord`, `<output_dir>/<split>.manifest.json` (skipped records
with their reasons), `<output_dir>/classes.json`, `<output_dir>/<split>_ids.txt`.
"""

import os
from collections.abc import Sequence

from absl import flags, logging

from data_tools import parsing_common as common
from tf_recurrent_seg.cli.common import run_main
from tf_recurrent_seg.defaults import ATR_CLASSES, ATR_LEFT_RIGHT_PAIRS

DATASET = "atr"
CLASS_NAMES = ATR_CLASSES
LEFT_RIGHT_PAIRS = ATR_LEFT_RIGHT_PAIRS
PAPER_SPLIT_SIZES = (6000, 700, 1000)
SPLIT_NAMES = ("train", "val", "test")


def split_sizes(num_ids: int, sizes: Sequence[int] = PAPER_SPLIT_SIZES) -> list[int]:
    """The sizes of the splits for `num_ids` ids: `sizes` when there are enough, else scaled in proportion.

    Proportional sizes use the largest-remainder rule (ties to the earlier split), so they add up to num_ids.
    """
    if any(size < 0 for size in sizes) or not sum(sizes):
        raise ValueError(f"split sizes must be non-negative with a positive sum, got {list(sizes)}")
    total = sum(sizes)
    if num_ids >= total:
        return list(sizes)
    exact = [num_ids * size / total for size in sizes]
    result = [int(value) for value in exact]
    order = sorted(range(len(sizes)), key=lambda index: (-(exact[index] - result[index]), index))
    for index in order[: num_ids - sum(result)]:
        result[index] += 1
    return result


def assign_splits(ids: Sequence[str], sizes: Sequence[int] = PAPER_SPLIT_SIZES) -> dict[str, list[str]]:
    """Sorted ids cut into contiguous train/val/test blocks of `split_sizes`; the rest is `extra`."""
    if len(sizes) != len(SPLIT_NAMES):
        raise ValueError(f"give {len(SPLIT_NAMES)} split sizes ({', '.join(SPLIT_NAMES)}), got {list(sizes)}")
    ordered = sorted(set(ids))
    splits, start = {}, 0
    for name, size in zip(SPLIT_NAMES, split_sizes(len(ordered), sizes)):
        splits[name] = ordered[start : start + size]
        start += size
    splits["extra"] = ordered[start:]
    return splits


def convert_atr(
    data_dir: str,
    output_dir: str,
    num_shards: int = 4,
    sizes: Sequence[int] = PAPER_SPLIT_SIZES,
    write_extra: bool = False,
) -> dict[str, dict]:
    """Converts ATR; returns per split {"written", "skipped", "manifest"}.

    Raises:
        FileNotFoundError: `JPEGImages` or `SegmentationClassAug` is not under `data_dir`.
    """
    image_dir = common.require(data_dir, "JPEGImages", "ATR images")
    label_dir = common.require(data_dir, "SegmentationClassAug", "ATR label maps")
    ids = sorted(set(common.file_stems(image_dir, ".jpg")) | set(common.file_stems(label_dir, ".png")))
    if not ids:
        raise FileNotFoundError(f"no ATR images (*.jpg) or label maps (*.png) in {image_dir} and {label_dir}")
    splits = assign_splits(ids, sizes)
    sizes_used = [len(splits[name]) for name in SPLIT_NAMES]
    rule = (
        f"ids = union of {image_dir}/*.jpg and {label_dir}/*.png stems ({len(ids)}), sorted as strings, cut into "
        f"contiguous blocks train/val/test of {sizes_used} (requested {list(sizes)}; scaled in proportion when "
        f"there are fewer ids), remaining {len(splits['extra'])} ids = extra"
    )
    written_splits = [name for name in (*SPLIT_NAMES, "extra") if splits[name] and (name != "extra" or write_extra)]
    results = {}
    for split in written_splits:
        records = [
            common.image_label_record(
                record_id, os.path.join(image_dir, f"{record_id}.jpg"), os.path.join(label_dir, f"{record_id}.png")
            )
            for record_id in splits[split]
        ]
        results[split] = common.write_split(
            os.path.join(output_dir, split),
            records,
            num_shards=num_shards,
            dataset=DATASET,
            split=split,
            class_names=CLASS_NAMES,
            source=f"ATR from {data_dir}; split {split}: {rule}",
        )
        logging.info("ATR %s: %s", split, results[split])
    common.write_dataset_info(
        output_dir,
        dataset=DATASET,
        class_names=CLASS_NAMES,
        left_right_pairs=LEFT_RIGHT_PAIRS,
        splits={name: splits[name] for name in (*SPLIT_NAMES, "extra") if splits[name]},
        results=results,
        extra={"split_rule": rule, "written_splits": written_splits},
    )
    return results


def _define_flags() -> None:
    flags.DEFINE_string("data_dir", None, "Folder holding JPEGImages/ and SegmentationClassAug/ of the ATR release.")
    flags.DEFINE_string("output_dir", None, "Where the shards, manifests and classes.json are written.")
    flags.DEFINE_integer("num_shards", 4, "Shards per split.")
    flags.DEFINE_list("split_sizes", [str(size) for size in PAPER_SPLIT_SIZES], "train,val,test sizes (the paper's).")
    flags.DEFINE_bool("write_extra", False, "Also write the ids beyond the split sizes as the `extra` split.")
    flags.mark_flags_as_required(["data_dir", "output_dir"])


def main(argv: Sequence[str]) -> None:
    del argv
    flag_values = flags.FLAGS
    results = convert_atr(
        flag_values.data_dir,
        flag_values.output_dir,
        flag_values.num_shards,
        [int(size) for size in flag_values.split_sizes],
        flag_values.write_extra,
    )
    common.print_split_results(results)


def run() -> None:
    _define_flags()
    run_main(main)


if __name__ == "__main__":
    run()
