"""Over-segmentation methods for Co-CNN's super-pixel layers, on synthetic human figures at 150x100 (H x W).

    python benchmarks/superpixels.py [--images 40] [--num_segments 500] [--noise 8] [--seed 0]

Draws `--images` synthetic person-parsing examples (`synthetic.parsing_examples(kind="person")`, 150x150 with
uniform per-pixel noise of amplitude `--noise`) and crops each to the 100 columns centred on the figure. For each
method of `tf_recurrent_seg.data.superpixels` at `--num_segments` (SLIC at two compactness values, Felzenszwalb,
quickshift) it runs what the input pipeline runs (segment, merge down to 512, descriptors, adjacency, neighbour
weights) and prints one JSON line with, on the merged segments the network would see:
- `boundary_recall`: the fraction of ground-truth label-boundary pixels (a pixel whose 4-neighbour has another
  label) within 2 pixels (Euclidean) of a super-pixel boundary pixel (same definition); `boundary_recall_1px`
  within 1 pixel (at 2 pixels every method is near 1 on these images);
- `undersegmentation_error`: the corrected form, sum over ground-truth segments G and the super-pixels S that
  overlap them of min(|S & G|, |S - G|), divided by the number of pixels;
- `achievable_accuracy`: the pixel accuracy of labelling each super-pixel with its majority ground-truth label;
- `mean_segments` (after merging), `mean_raw_segments` (before), `merged_images` (images over 512);
- `ms_per_image`: the mean wall time of segment + merge + descriptors + adjacency + weights (after one warm-up
  image each; image by image the methods run in turn), and `segment_ms` of the segmentation alone.
A last line `{"benchmark": "superpixels", "default": ..., "default_*": ...}` repeats the numbers of the method
the package uses by default (what benchmarks/run_all.py records). No targets: the table is in docs/superpixels.md.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from scipy import ndimage

from tf_recurrent_seg.data import superpixels, synthetic

HEIGHT, WIDTH = 150, 100
MAX_SEGMENTS = 512
# name -> (method, keyword arguments of superpixels.segment)
CONFIGS = {
    "slic_c10": ("slic", {"compactness": 10.0}),
    "slic_c20": ("slic", {"compactness": 20.0}),
    "felzenszwalb": ("felzenszwalb", {}),
    "quickshift": ("quickshift", {}),
}
DEFAULT = "slic_c20"  # superpixels.SLIC_COMPACTNESS


def examples(seed: int, count: int, noise: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image (150, 100, 3) uint8, labels (150, 100)) pairs: the 100 columns centred on the figure."""
    pairs = []
    for example in synthetic.parsing_examples(seed, count, HEIGHT, kind="person", noise=noise):
        columns = np.nonzero(example["labels"])[1]
        centre = int(round(columns.mean())) if columns.size else HEIGHT // 2
        left = min(max(centre - WIDTH // 2, 0), HEIGHT - WIDTH)
        pairs.append((example["image"][:, left : left + WIDTH], example["labels"][:, left : left + WIDTH]))
    return pairs


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another label (both sides of every border)."""
    edge = np.zeros(labels.shape, bool)
    horizontal = labels[:, 1:] != labels[:, :-1]
    vertical = labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    return edge


def boundary_recall(segments: np.ndarray, labels: np.ndarray, tolerance: float = 2.0) -> float:
    truth = boundaries(labels)
    if not truth.any():
        return 1.0
    near = ndimage.distance_transform_edt(~boundaries(segments)) <= tolerance
    return float((truth & near).sum() / truth.sum())


def overlaps(segments: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K, L) pixel counts of super-pixel k inside ground-truth label l."""
    num_labels = int(labels.max()) + 1
    flat = segments.ravel().astype(np.int64) * num_labels + labels.ravel()
    return np.bincount(flat, minlength=(int(segments.max()) + 1) * num_labels).reshape(-1, num_labels)


def undersegmentation_error(segments: np.ndarray, labels: np.ndarray) -> float:
    counts = overlaps(segments, labels)
    outside = counts.sum(axis=1, keepdims=True) - counts
    return float(np.where(counts > 0, np.minimum(counts, outside), 0).sum() / segments.size)


def achievable_accuracy(segments: np.ndarray, labels: np.ndarray) -> float:
    return float(overlaps(segments, labels).max(axis=1).sum() / segments.size)


def pipeline(image: np.ndarray, method: str, num_segments: int, options: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """What superpixel_inputs computes (without the padding): (raw segments, merged segments, segment ms)."""
    start = time.perf_counter()
    raw = superpixels.segment(image, num_segments, method, **options)
    segment_ms = (time.perf_counter() - start) * 1000
    segments = superpixels.merge_smallest(image, raw, MAX_SEGMENTS)
    superpixels.neighbour_weights(superpixels.descriptors(image, segments), superpixels.adjacency(segments))
    return raw, segments, segment_ms


def measure(pairs, num_segments: int) -> dict[str, dict]:
    """{name: result} of every method of CONFIGS. Image by image, the methods run in turn, so a change in the load
    of a shared machine hits all of them alike."""
    for method, options in CONFIGS.values():
        pipeline(pairs[0][0], method, num_segments, options)  # warm-up
    rows = {name: [] for name in CONFIGS}
    for image, labels in pairs:
        for name, (method, options) in CONFIGS.items():
            start = time.perf_counter()
            raw, segments, segment_ms = pipeline(image, method, num_segments, options)
            total_ms = (time.perf_counter() - start) * 1000
            rows[name].append(
                (
                    boundary_recall(segments, labels),
                    boundary_recall(segments, labels, tolerance=1.0),
                    undersegmentation_error(segments, labels),
                    achievable_accuracy(segments, labels),
                    int(segments.max()) + 1,
                    int(raw.max()) + 1,
                    total_ms,
                    segment_ms,
                )
            )
    return {name: summarise(name, np.array(rows[name], np.float64).T) for name in CONFIGS}


def summarise(name: str, columns: np.ndarray) -> dict:
    method, options = CONFIGS[name]
    return {
        "benchmark": "superpixels",
        "method": name,
        "settings": {"method": method, **options},
        "boundary_recall": round(float(columns[0].mean()), 4),
        "boundary_recall_1px": round(float(columns[1].mean()), 4),
        "undersegmentation_error": round(float(columns[2].mean()), 4),
        "achievable_accuracy": round(float(columns[3].mean()), 4),
        "mean_segments": round(float(columns[4].mean()), 1),
        "mean_raw_segments": round(float(columns[5].mean()), 1),
        "min_max_raw_segments": [int(columns[5].min()), int(columns[5].max())],
        "merged_images": int((columns[5] > MAX_SEGMENTS).sum()),
        "ms_per_image": round(float(columns[6].mean()), 2),
        "segment_ms": round(float(columns[7].mean()), 2),
        "images": columns.shape[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--num_segments", type=int, default=500)
    parser.add_argument("--noise", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = examples(args.seed, args.images, args.noise)
    results = measure(pairs, args.num_segments)
    for result in results.values():
        print(json.dumps(result))
    default = results[DEFAULT]
    summary = {"benchmark": "superpixels", "default": DEFAULT, "cpu_count": os.cpu_count()}
    keys = ("boundary_recall", "undersegmentation_error", "achievable_accuracy", "mean_segments", "ms_per_image")
    summary.update({f"default_{key}": default[key] for key in keys})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
