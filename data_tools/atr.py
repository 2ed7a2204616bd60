"""ATR human parsing (Liang et al. 2015) -> TFRecord shards for the LG-LSTM parsing models.

Download: the ATR release ("humanparsing", https://github.com/lemondan/HumanParsing-Dataset), unpacked so that
`--data_dir` holds (directly or up to two folder levels down) `JPEGImages/<id>.jpg` and
`SegmentationClassAug/<id>.png` (class ids 0-17, palette or gray).

Usage:
    python -m data_tools.atr --data_dir /data/humanparsing --output_dir data/atr [--num_shards 4] [--write_extra]

Classes (18, `defaults.ATR_CLASSES`); a horizontal flip swaps 9<->10, 12<->13, 14<->15 (`LEFT_RIGHT_PAIRS`).

Split (no split files ship; docs/reproduce.md has the details): an id's family is its name before the last
`_<digits>`. The ATR images proper (`multi`, `997`, `2500`, `4565`), ordered by the SHA-1 of their id so that
every family reaches every split, are cut into contiguous train/val/test blocks of the paper's 6000/700/1000,
scaled to their number (`--split_sizes`). Chictopia10k (`dataset10k_*`) is `extra`, written only with
`--write_extra`. Fashionista (`fash_*`) enters no split (its test images are Fashionista's evaluation set). Ids of
no known family are skipped and counted (`--unknown_ids=atr` takes them as ATR images).
`<output_dir>/classes.json` records the rule and family counts, `<split>_ids.txt` the ids.

Output: `<output_dir>/<split>-0000i-of-0000N.tfrecord` and `<split>.manifest.json` (skipped records and reasons).
"""

import dataclasses
import hashlib
import os
import re
from collections.abc import Iterable, Sequence

from absl import flags, logging

from data_tools import parsing_common as common
from tf_recurrent_seg.cli.common import run_main
from tf_recurrent_seg.defaults import ATR_CLASSES, ATR_LEFT_RIGHT_PAIRS

DATASET = "atr"
CLASS_NAMES = ATR_CLASSES
LEFT_RIGHT_PAIRS = ATR_LEFT_RIGHT_PAIRS
PAPER_SPLIT_SIZES = (6000, 700, 1000)
SPLIT_NAMES = ("train", "val", "test")

# The public release mixes three datasets, told apart only by the file-name prefix (as reported by users of the
# release; the archive documents no scheme).
ATR_FAMILIES = ("multi", "997", "2500", "4565")  # the ATR images proper: the only source of train/val/test
CHICTOPIA_FAMILY = "dataset10k"  # Chictopia10k: the paper adds it to training only ("(more)" rows) -> `extra`
FASHIONISTA_FAMILY = "fash"  # Fashionista, test images included: training on them would leak its evaluation set
UNKNOWN_ID_CHOICES = ("skip", "atr")
NOT_IN_SCHEME = "name not of the form <prefix>_<number>"
UNKNOWN_PREFIX = "prefix of no known family"
_FAMILY_PATTERN = re.compile(r"(.*)_(\d+)")  # greedy: the prefix ends at the last `_<digits>`


def id_family(record_id: str) -> str | None:
    """The release family of an id: its name before the last `_<digits>`; None without that suffix."""
    match = _FAMILY_PATTERN.fullmatch(record_id)
    return match.group(1) if match else None


@dataclasses.dataclass
class IdFamilies:
    """The ids of a release by role, each list sorted as strings."""

    atr: list[str]  # train/val/test candidates (with --unknown_ids=atr, the unknown ids too)
    chictopia: list[str]  # the `extra` split
    fashionista: list[str]  # excluded from every split
    unknown: dict[str, list[str]]  # reason -> ids of no known family
    counts: dict[str, int]  # family prefix (or "unknown") -> number of ids


def classify_ids(ids: Iterable[str], unknown_ids: str = "skip") -> IdFamilies:
    """Sorts the ids of the release into families by their prefix (`id_family`)."""
    if unknown_ids not in UNKNOWN_ID_CHOICES:
        raise ValueError(f"unknown_ids must be one of {UNKNOWN_ID_CHOICES}, got {unknown_ids!r}")
    families = IdFamilies([], [], [], {}, dict.fromkeys((*ATR_FAMILIES, CHICTOPIA_FAMILY, FASHIONISTA_FAMILY), 0))
    families.counts["unknown"] = 0
    for record_id in sorted(set(ids)):
        family = id_family(record_id)
        if family in ATR_FAMILIES:
            families.atr.append(record_id)
        elif family == CHICTOPIA_FAMILY:
            families.chictopia.append(record_id)
        elif family == FASHIONISTA_FAMILY:
            families.fashionista.append(record_id)
        else:
            families.unknown.setdefault(NOT_IN_SCHEME if family is None else UNKNOWN_PREFIX, []).append(record_id)
            if unknown_ids == "atr":  # e.g. a copy re-exported with plain numeric names
                families.atr.append(record_id)
            family = "unknown"
        families.counts[family] += 1
    return families


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


def split_order(record_id: str) -> str:
    """The key the ids are ordered by before the cut: the SHA-1 of the id, a fixed pseudo-random order. Sorted
    names would put whole families in one split (string order gives 2500_ < 4565_ < 997_ < multi_)."""
    return hashlib.sha1(record_id.encode()).hexdigest()


def assign_splits(ids: Sequence[str], sizes: Sequence[int] = PAPER_SPLIT_SIZES) -> dict[str, list[str]]:
    """Ids in `split_order` cut into contiguous train/val/test blocks of `split_sizes`; the rest is `extra`."""
    if len(sizes) != len(SPLIT_NAMES):
        raise ValueError(f"give {len(SPLIT_NAMES)} split sizes ({', '.join(SPLIT_NAMES)}), got {list(sizes)}")
    ordered = sorted(set(ids), key=split_order)
    splits, start = {}, 0
    for name, size in zip(SPLIT_NAMES, split_sizes(len(ordered), sizes)):
        splits[name] = ordered[start : start + size]
        start += size
    splits["extra"] = ordered[start:]
    return splits


def plan_splits(
    ids: Iterable[str], sizes: Sequence[int] = PAPER_SPLIT_SIZES, unknown_ids: str = "skip"
) -> tuple[dict[str, list[str]], dict]:
    """(split -> ids, the facts for classes.json: rule, family counts, excluded and skipped ids).

    train/val/test come from the ATR families alone; `extra` is Chictopia10k plus any ATR ids beyond
    explicitly requested sizes (none with the paper's sizes on the public release, which has fewer ATR ids).
    """
    families = classify_ids(ids, unknown_ids)
    splits = assign_splits(families.atr, sizes)
    overflow = splits["extra"]
    splits["extra"] = sorted(families.chictopia + overflow)
    sizes_used = [len(splits[name]) for name in SPLIT_NAMES]
    rule = (
        f"family = id before its last '_<digits>'; train/val/test = the {len(families.atr)} ids of families "
        f"{'/'.join(ATR_FAMILIES)}{' and of no known family' if unknown_ids == 'atr' else ''}, ordered by the "
        f"SHA-1 of the id, cut into contiguous blocks of {sizes_used} (requested {list(sizes)}, scaled in "
        f"proportion when there are fewer ids); extra = the {len(families.chictopia)} {CHICTOPIA_FAMILY} "
        "(Chictopia10k) ids"
        f"{f' and the {len(overflow)} ATR ids beyond the requested sizes' if overflow else ''}; "
        f"{FASHIONISTA_FAMILY} (Fashionista) ids excluded"
    )
    unknown_counts = {reason: len(reason_ids) for reason, reason_ids in families.unknown.items()}
    info = {
        "split_rule": rule,
        "family_counts": families.counts,
        "excluded_ids": {FASHIONISTA_FAMILY: len(families.fashionista)},
        "unknown_ids": {"handling": unknown_ids, "reasons": unknown_counts},
    }
    _log_classification(families, unknown_ids)
    return splits, info


def _log_classification(families: IdFamilies, unknown_ids: str) -> None:
    """One line per reason an id is left out: the user sees the counts without reading classes.json."""
    if families.fashionista:
        logging.info(
            "ATR: %d %s_* (Fashionista) ids excluded from every split: Fashionista's test images are its "
            "evaluation set (data_tools.fashionista)",
            len(families.fashionista),
            FASHIONISTA_FAMILY,
        )
    action = "converted as ATR images (--unknown_ids=atr)" if unknown_ids == "atr" else "skipped"
    for reason, reason_ids in families.unknown.items():
        examples = ", ".join(reason_ids[:3]) + (", ..." if len(reason_ids) > 3 else "")
        logging.warning("ATR: %d ids %s, %s (%s)", len(reason_ids), action, reason, examples)


def convert_atr(
    data_dir: str,
    output_dir: str,
    num_shards: int = 4,
    sizes: Sequence[int] = PAPER_SPLIT_SIZES,
    write_extra: bool = False,
    unknown_ids: str = "skip",
) -> dict[str, dict]:
    """Converts ATR; returns per split {"written", "skipped", "manifest"}.

    Raises:
        FileNotFoundError: `JPEGImages` or `SegmentationClassAug` is not under `data_dir`.
        ValueError: `unknown_ids` is not one of UNKNOWN_ID_CHOICES.
    """
    image_dir = common.require(data_dir, "JPEGImages", "ATR images")
    label_dir = common.require(data_dir, "SegmentationClassAug", "ATR label maps")
    ids = set(common.file_stems(image_dir, ".jpg")) | set(common.file_stems(label_dir, ".png"))
    if not ids:
        raise FileNotFoundError(f"no ATR images (*.jpg) or label maps (*.png) in {image_dir} and {label_dir}")
    # The split is planned before any record is read, so a bad file never moves an id to another split.
    splits, info = plan_splits(ids, sizes, unknown_ids)
    rule = f"ids = union of {image_dir}/*.jpg and {label_dir}/*.png stems ({len(ids)}); {info['split_rule']}"
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
        extra={**info, "split_rule": rule, "written_splits": written_splits},
    )
    return results


def _define_flags() -> None:
    flags.DEFINE_string("data_dir", None, "Folder holding JPEGImages/ and SegmentationClassAug/ of the ATR release.")
    flags.DEFINE_string("output_dir", None, "Where the shards, manifests and classes.json are written.")
    flags.DEFINE_integer("num_shards", 4, "Shards per split.")
    flags.DEFINE_list(
        "split_sizes",
        [str(size) for size in PAPER_SPLIT_SIZES],
        "train,val,test sizes (the paper's), scaled in proportion to the number of ATR ids when there are fewer.",
    )
    flags.DEFINE_bool("write_extra", False, "Also write the `extra` split (Chictopia10k, the dataset10k_* ids).")
    flags.DEFINE_enum(
        "unknown_ids",
        "skip",
        list(UNKNOWN_ID_CHOICES),
        "Ids of no known family (not multi/997/2500/4565/dataset10k/fash_<n>): `skip` them (counted), or take "
        "them as ATR images (`atr`, e.g. for a copy re-exported with plain numeric names).",
    )
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
        flag_values.unknown_ids,
    )
    common.print_split_results(results)


def run() -> None:
    _define_flags()
    run_main(main)


if __name__ == "__main__":
    run()
