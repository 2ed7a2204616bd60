"""Fashionista v0.2.1 (Yamaguchi et al.) -> TFRecord shards with the 18 ATR classes, for the LG-LSTM models.

Download: `fashionista-v0.2.1.tgz` from Kota Yamaguchi's clothing parsing page
(http://vision.is.tohoku.ac.jp/~kyamagu/research/clothing_parsing/); it holds `fashionista_v0.2.1.mat`.

Usage:
    python -m data_tools.fashionista --mat_path /data/fashionista_v0.2.1.mat --output_dir data/fashionista

Source format (MATLAB v5/v7 .mat, read with scipy.io.loadmat; a v7.3/HDF5 re-save is refused with a message
saying to re-save it with `save -v7`): `truths` (685 samples: `image` JPEG bytes, `pose.point` 14x2 [x, y]
1-based joints, `annotation.superpixel_map` PNG bytes of 1-based superpixel ids, `annotation.
superpixel_labels` (1-based ids into `annotation.labels`), `annotation.labels` (56 names starting "null")),
and `test_index` (1-based, 229 samples). Pixel label = labels{superpixel_labels(superpixel_map)}.
Splits: `test` = truths(test_index), `train` = all others, both in truths order.

## The 56 -> 18 ATR mapping (not published by the paper; defined here, by name)

| Fashionista names | ATR class (id) |
|---|---|
| null | background (0) |
| hat | hat (1) |
| hair | hair (2) |
| sunglasses, glasses | sunglass (3) |
| t-shirt, blouse, shirt, top, sweater, sweatshirt, jumper, cardigan | upper-clothes (4) |
| blazer, jacket, coat, vest, cape, bodysuit, bra, tie | upper-clothes (4) |
| skirt | skirt (5) |
| pants, jeans, leggings, shorts | pants (6) |
| dress, romper | dress (7) |
| belt | belt (8) |
| shoes, boots, heels, wedges, flats | left-shoe (9) / right-shoe (10) by pose |
| sandals, sneakers, clogs, pumps, loafers | left-shoe (9) / right-shoe (10) by pose |
| skin | face (11) / left-leg (12) / right-leg (13) / left-arm (14) / right-arm (15) by pose |
| tights, stockings, socks | left-leg (12) / right-leg (13) by pose |
| gloves | left-arm (14) / right-arm (15) by pose |
| bag, purse, wallet | bag (16) |
| scarf | scarf (17) |
| accessories, necklace, bracelet, ring, earrings, watch, intimate, suit | ignore (255) |

Why:
- Left/right and skin. Fashionista has one `skin` label (face, neck, arms, hands, legs, any bare torso) and
  footwear without sides, while ATR has face, left/right arm, left/right leg, left/right shoe. Mapping all skin
  to face or all footwear to left-shoe would write labels that are wrong on roughly half of those pixels, and
  ignoring them (255) would leave 7 of the 18 classes without a single labelled Fashionista pixel (no training
  signal, no test F-1 for them). Fashionista ships a ground-truth 14-joint pose per image, the only annotation
  that carries sides, so (default `--sides=pose`) each such pixel takes the class of the nearest limb segment
  of that pose: head-neck -> face; shoulder-elbow, elbow-hand -> arm; hip-knee, knee-ankle -> leg; for
  footwear the knee-ankle segment of each leg -> shoe. Sides are the person's own: the pose's `right_*` joints
  (person-centric, LSP/PARSE order) give the `right-*` classes. This assumes ATR's left/right classes are
  person-centric too, as human parsing labels usually are; it was not checked on ATR images here: if they
  are image-side, every side pair comes out swapped (check one converted image against ATR).
  Errors remain where the nearest-segment rule is wrong (bare torso skin goes to the nearest of face/arms, hair-
  covered neck...). With `--sides=ignore`, every such pixel (skin, footwear, hosiery, gloves) is 255: no wrong
  label, at the price of no face/arm/leg/shoe supervision. An image whose pose is missing or not 14x2 gets 255
  on those pixels (listed in classes.json `fashionista.pose_missing`).
- Hosiery (tights, stockings, socks) follows the outline of the leg and gloves that of the hand; ATR has no
  class for them, and its body-part classes cover what is on the limb. Leggings are opaque trousers: pants.
- romper (a one-piece top and shorts): dress, ATR's only one-piece garment. suit (jacket and trousers or skirt
  under one label): the pixels belong to two ATR classes and the annotation does not say which: ignore.
  intimate (lingerie, top or bottom): ignore. bra (worn visible, as a top): upper-clothes. tie, cape: worn on
  the upper body: upper-clothes. jumper: read in the British sense (a sweater); in the US sense (a
  pinafore dress) it would be dress: the name is ambiguous, and the garment is rare.
- Jewellery, watches and "accessories" have no ATR class and cover small areas on skin or clothes whose ATR class
  is unknown: ignore. glasses (clear): sunglass, ATR's eyewear class. wallet (a clutch in hand): bag.
- A name that is not in the table (not v0.2.1's 56) is not guessed: an image using it is skipped, the reason
  naming it. A superpixel id outside the superpixel list, or a label id outside the name list, is skipped too.
"""

import io
import os
from collections.abc import Sequence

import numpy as np
import scipy.io
from absl import flags, logging
from PIL import Image, UnidentifiedImageError

from data_tools import parsing_common as common
from tf_recurrent_seg.cli.common import run_main
from tf_recurrent_seg.data.image_io import BadRecord, decode_image_bytes, error_text
from tf_recurrent_seg.data.records import IGNORE_LABEL
from tf_recurrent_seg.defaults import ATR_CLASSES, ATR_LEFT_RIGHT_PAIRS

DATASET = "fashionista"
CLASS_NAMES = ATR_CLASSES
LEFT_RIGHT_PAIRS = ATR_LEFT_RIGHT_PAIRS

# The 56 names of v0.2.1, in the file's order.
FASHIONISTA_LABELS = (
    "null",
    "tights",
    "shorts",
    "blazer",
    "t-shirt",
    "bag",
    "shoes",
    "coat",
    "skirt",
    "purse",
    "boots",
    "blouse",
    "jacket",
    "bra",
    "dress",
    "pants",
    "sweater",
    "shirt",
    "jeans",
    "leggings",
    "scarf",
    "hat",
    "top",
    "cardigan",
    "accessories",
    "vest",
    "sunglasses",
    "belt",
    "socks",
    "glasses",
    "intimate",
    "stockings",
    "necklace",
    "cape",
    "jumper",
    "sweatshirt",
    "suit",
    "bracelet",
    "heels",
    "wedges",
    "ring",
    "flats",
    "tie",
    "romper",
    "sandals",
    "earrings",
    "gloves",
    "sneakers",
    "clogs",
    "watch",
    "pumps",
    "wallet",
    "bodysuit",
    "loafers",
    "hair",
    "skin",
)

# Labels whose ATR class depends on the side (resolved with the pose), and the ignore label.
SKIN, FOOTWEAR, LEGWEAR, HANDWEAR, IGNORE = "<skin>", "<footwear>", "<legwear>", "<handwear>", "<ignore>"
_GROUPS = {
    "background": ["null"],
    "hat": ["hat"],
    "hair": ["hair"],
    "sunglass": ["sunglasses", "glasses"],
    "upper-clothes": [
        "t-shirt",
        "blouse",
        "shirt",
        "top",
        "sweater",
        "sweatshirt",
        "jumper",
        "cardigan",
        "blazer",
        "jacket",
        "coat",
        "vest",
        "cape",
        "bodysuit",
        "bra",
        "tie",
    ],
    "skirt": ["skirt"],
    "pants": ["pants", "jeans", "leggings", "shorts"],
    "dress": ["dress", "romper"],
    "belt": ["belt"],
    FOOTWEAR: ["shoes", "boots", "heels", "wedges", "flats", "sandals", "sneakers", "clogs", "pumps", "loafers"],
    SKIN: ["skin"],
    LEGWEAR: ["tights", "stockings", "socks"],
    HANDWEAR: ["gloves"],
    "bag": ["bag", "purse", "wallet"],
    "scarf": ["scarf"],
    IGNORE: ["accessories", "necklace", "bracelet", "ring", "earrings", "watch", "intimate", "suit"],
}
# Fashionista name -> ATR class name, or one of SKIN/FOOTWEAR/LEGWEAR/HANDWEAR/IGNORE.
FASHIONISTA_TO_ATR = {name: target for target, names in _GROUPS.items() for name in names}

# Pose joints of Fashionista (`pose.point` rows, [x, y], 1-based).
POSE_JOINTS = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_hand",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_hand",
    "neck",
    "head",
)
# ATR class -> the pose segments (joint pairs) it is measured against.
LIMB_SEGMENTS = {
    "face": [("head", "neck")],
    "left-arm": [("left_shoulder", "left_elbow"), ("left_elbow", "left_hand")],
    "right-arm": [("right_shoulder", "right_elbow"), ("right_elbow", "right_hand")],
    "left-leg": [("left_hip", "left_knee"), ("left_knee", "left_ankle")],
    "right-leg": [("right_hip", "right_knee"), ("right_knee", "right_ankle")],
    "left-shoe": [("left_knee", "left_ankle")],
    "right-shoe": [("right_knee", "right_ankle")],
}
# Side-dependent label -> the ATR classes its pixels may take (ties go to the first).
SIDE_CANDIDATES = {
    SKIN: ("face", "left-arm", "right-arm", "left-leg", "right-leg"),
    FOOTWEAR: ("left-shoe", "right-shoe"),
    LEGWEAR: ("left-leg", "right-leg"),
    HANDWEAR: ("left-arm", "right-arm"),
}
SIDES = ("pose", "ignore")


def _segment_distance(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Euclidean distance of each (x, y) row of `points` to the segment start-end."""
    direction = end - start
    length2 = float(direction @ direction)
    if length2 == 0.0:
        t = np.zeros(len(points))
    else:
        t = np.clip((points - start) @ direction / length2, 0.0, 1.0)
    return np.linalg.norm(points - (start + t[:, None] * direction), axis=1)


def assign_by_pose(rows: np.ndarray, cols: np.ndarray, pose: np.ndarray, candidates: Sequence[str]) -> np.ndarray:
    """ATR ids for the pixels (rows, cols): the candidate class whose pose segments are nearest.

    Args:
        rows, cols: 0-based pixel coordinates.
        pose: (14, 2) [x, y] joints in 1-based image coordinates, in `POSE_JOINTS` order.
        candidates: ATR class names from `LIMB_SEGMENTS`; ties go to the earlier one.
    """
    joints = {name: pose[index] - 1.0 for index, name in enumerate(POSE_JOINTS)}
    points = np.stack([cols, rows], axis=1).astype(np.float64)
    distances = np.stack(
        [
            np.min([_segment_distance(points, joints[a], joints[b]) for a, b in LIMB_SEGMENTS[name]], axis=0)
            for name in candidates
        ]
    )
    ids = np.array([CLASS_NAMES.index(name) for name in candidates], np.uint8)
    return ids[np.argmin(distances, axis=0)]


# ---------------------------------------------------------------------------------------------------------
# Reading the .mat file


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _is_hdf5(path: str) -> bool:
    """MATLAB v7.3 files are HDF5 with a 512-byte text header ("MATLAB 7.3 MAT-file...")."""
    with open(path, "rb") as file:
        header = file.read(520)
    return header.startswith(b"MATLAB 7.3") or _HDF5_SIGNATURE in (header[:8], header[512:520])


def load_mat(mat_path: str) -> tuple[list, np.ndarray]:
    """(list of `truths` samples as scipy mat_structs, 1-based test indices) of fashionista_v0.2.1.mat.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a v7.3 (HDF5) file, or `truths` / `test_index` missing.
    """
    if not os.path.isfile(mat_path):
        raise FileNotFoundError(f"{mat_path} does not exist")
    if _is_hdf5(mat_path):
        raise ValueError(
            f"{mat_path} is a MATLAB v7.3 (HDF5) file; fashionista_v0.2.1.mat as distributed is a v5/v7 file. "
            "Re-save it in MATLAB/Octave with `load fashionista_v0.2.1.mat truths test_index; "
            "save -v7 fashionista_v7.mat truths test_index` and pass that file."
        )
    data = scipy.io.loadmat(mat_path, squeeze_me=True, struct_as_record=False, variable_names=["truths", "test_index"])
    for name in ("truths", "test_index"):
        if name not in data:
            raise ValueError(f"{mat_path} has no variable `{name}`: not a Fashionista v0.2.1 file")
    truths = data["truths"]
    samples = [truths] if isinstance(truths, scipy.io.matlab.mat_struct) else list(np.atleast_1d(truths).ravel())
    return samples, np.atleast_1d(np.asarray(data["test_index"])).ravel()


def _field(struct, name: str, what: str):
    if not hasattr(struct, name):
        raise BadRecord(f"{what} has no field `{name}`")
    return getattr(struct, name)


def _as_bytes(value, what: str) -> bytes:
    array = np.asarray(value)
    if array.size == 0:
        raise BadRecord(f"{what} is empty")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or np.any(
            (array < 0) | (array > 255) | (array != np.round(array))
        ):
            raise BadRecord(f"{what} is not a byte array (dtype {array.dtype})")
        array = array.astype(np.uint8)
    return array.ravel(order="F").tobytes()


def _cell_strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(item) for item in np.atleast_1d(np.asarray(value, dtype=object)).ravel(order="F")]


def decode_superpixel_map(data: bytes) -> np.ndarray:
    """(H, W) int64 superpixel ids from the PNG bytes (8- or 16-bit gray or palette)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise BadRecord("corrupt or truncated superpixel map", error_text(error)) from None
    if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise BadRecord(f"superpixel map must be a single-channel PNG, got mode {image.mode}")
    return np.asarray(image).astype(np.int64)


def sample_labels(
    sample, sides: str = "pose", stats: dict | None = None, name: str = "?"
) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(image bytes, pixels, ATR label map) of one `truths` sample; BadRecord when it cannot be converted.

    A sample without a usable pose (with sides="pose") is appended, as `name`, to `stats["pose_missing"]`.
    """
    image_bytes, pixels = decode_image_bytes(_as_bytes(_field(sample, "image", "sample"), "image"), "image")
    annotation = _field(sample, "annotation", "sample")
    superpixels = decode_superpixel_map(_as_bytes(_field(annotation, "superpixel_map", "annotation"), "superpixel map"))
    superpixel_labels = np.atleast_1d(np.asarray(_field(annotation, "superpixel_labels", "annotation"))).ravel()
    names = _cell_strings(_field(annotation, "labels", "annotation"))
    if superpixels.min() < 1 or superpixels.max() > len(superpixel_labels):
        raise BadRecord(
            f"superpixel map ids {superpixels.min()}-{superpixels.max()} outside 1-{len(superpixel_labels)} "
            "(the number of superpixel labels)"
        )
    name_ids = superpixel_labels[superpixels - 1]
    used = np.unique(name_ids)
    bad = used[(used < 1) | (used > len(names)) | (used != np.round(used))]
    if bad.size:
        shown = [int(value) if value == np.round(value) else float(value) for value in bad]
        raise BadRecord(f"superpixel labels {shown} outside 1-{len(names)} (the number of label names)")
    name_ids = name_ids.astype(np.int64)
    unknown = sorted({names[int(index) - 1] for index in used} - FASHIONISTA_TO_ATR.keys())
    if unknown:
        raise BadRecord(f"label names {unknown} are not in the Fashionista v0.2.1 -> ATR mapping")

    labels = np.full(name_ids.shape, IGNORE_LABEL, np.uint8)
    pose = _pose(sample) if sides == "pose" else None
    if sides == "pose" and pose is None and stats is not None:
        stats.setdefault("pose_missing", []).append(name)
    for index in used:
        target = FASHIONISTA_TO_ATR[names[int(index) - 1]]
        where = name_ids == index
        if target in SIDE_CANDIDATES:
            if pose is not None:
                rows, cols = np.nonzero(where)
                labels[rows, cols] = assign_by_pose(rows, cols, pose, SIDE_CANDIDATES[target])
        elif target != IGNORE:
            labels[where] = CLASS_NAMES.index(target)
    return image_bytes, pixels, labels


def _pose(sample) -> np.ndarray | None:
    """The (14, 2) ground-truth pose of a sample, or None when absent or malformed."""
    pose = getattr(sample, "pose", None)
    point = getattr(pose, "point", None) if pose is not None else None
    if point is None:
        return None
    try:
        point = np.asarray(point, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if point.shape != (len(POSE_JOINTS), 2) or not np.all(np.isfinite(point)):
        return None
    return point


def convert_fashionista(mat_path: str, output_dir: str, num_shards: int = 4, sides: str = "pose") -> dict[str, dict]:
    """Converts Fashionista v0.2.1 into train/test shards with ATR classes; returns per split counts.

    Raises:
        ValueError: bad `sides`, a v7.3 file, `test_index` out of range.
    """
    if sides not in SIDES:
        raise ValueError(f"sides must be one of {SIDES}, got {sides!r}")
    samples, test_index = load_mat(mat_path)
    count = len(samples)
    if test_index.dtype == bool:
        if test_index.size != count:
            raise ValueError(f"test_index is a mask of {test_index.size} entries for {count} samples")
        test_positions = set(np.nonzero(test_index)[0].tolist())
    else:
        if np.any((test_index < 1) | (test_index > count)):
            raise ValueError(f"test_index holds indices outside 1-{count} (1-based positions in truths)")
        test_positions = {int(index) - 1 for index in test_index}
    positions = {
        "train": [position for position in range(count) if position not in test_positions],
        "test": sorted(test_positions),
    }
    stats: dict[str, list] = {}

    def record(position: int) -> common.ParsingRecord:
        sample = samples[position]
        index = getattr(sample, "index", position + 1)
        index = (
            int(index) if np.ndim(index) == 0 and np.issubdtype(np.asarray(index).dtype, np.number) else position + 1
        )
        return common.ParsingRecord(
            name=f"truths({position + 1})",
            filename=f"fashionista_{index:04d}.jpg",
            load=lambda: sample_labels(sample, sides, stats, f"truths({position + 1})"),
        )

    results, split_ids = {}, {}
    for split, split_positions in positions.items():
        results[split] = common.write_split(
            os.path.join(output_dir, split),
            [record(position) for position in split_positions],
            num_shards=num_shards,
            dataset=DATASET,
            split=split,
            class_names=CLASS_NAMES,
            source=(
                f"Fashionista v0.2.1 {mat_path}: {split} = "
                + ("truths(test_index)" if split == "test" else "truths not in test_index")
                + f"; 56 -> 18 ATR classes (data_tools/fashionista.py), sides={sides}"
            ),
        )
        split_ids[split] = [f"truths({position + 1})" for position in split_positions]
        logging.info("Fashionista %s: %s", split, results[split])
    if stats.get("pose_missing"):
        logging.warning("%d samples had no usable pose: their skin/footwear pixels are 255", len(stats["pose_missing"]))
    common.write_dataset_info(
        output_dir,
        dataset=DATASET,
        class_names=CLASS_NAMES,
        left_right_pairs=LEFT_RIGHT_PAIRS,
        splits=split_ids,
        results=results,
        extra={
            "fashionista": {
                "mapping": FASHIONISTA_TO_ATR,
                "sides": sides,
                "side_candidates": {key: list(value) for key, value in SIDE_CANDIDATES.items()},
                "pose_missing": stats.get("pose_missing", []),
            }
        },
    )
    return results


def _define_flags() -> None:
    flags.DEFINE_string("mat_path", None, "fashionista_v0.2.1.mat (from fashionista-v0.2.1.tgz).")
    flags.DEFINE_string("output_dir", None, "Where the shards, manifests and classes.json are written.")
    flags.DEFINE_integer("num_shards", 4, "Shards per split.")
    flags.DEFINE_enum(
        "sides",
        "pose",
        SIDES,
        "How skin/footwear/hosiery/gloves get their ATR side classes: nearest pose limb, or 255.",
    )
    flags.mark_flags_as_required(["mat_path", "output_dir"])


def main(argv: Sequence[str]) -> None:
    del argv
    flag_values = flags.FLAGS
    results = convert_fashionista(
        flag_values.mat_path, flag_values.output_dir, flag_values.num_shards, flag_values.sides
    )
    common.print_split_results(results)


def run() -> None:
    _define_flags()
    run_main(main)


if __name__ == "__main__":
    run()
