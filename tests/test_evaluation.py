"""Tests of tf_recurrent_seg.evaluation and tf_recurrent_seg.cli.evaluate.

Exactness: records of non-square images are evaluated with stand-in models whose padded (S x S) prediction is
known (left half / vertical bands); the expected numbers map that prediction back with the numpy reference
(`image_ops.resize_and_pad` for the placement, `image_ops.unpad_and_resize` for the inverse) and
count intersections, unions and confusion matrices with numpy. DenseCRF is a stub module standing in for
`tf_recurrent_seg.crf` (its real behaviour is crf.py's own tests' business); a separate test runs the real
one when pydensecrf is installed. End to end: the tiny (`shrink_config`) models on synthetic records."""

import io
import json
import math
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image

from tf_recurrent_seg import evaluation, image_ops, models, tasks, workdir
from tf_recurrent_seg import metrics as metrics_lib
from tf_recurrent_seg.cli import evaluate as cli
from tf_recurrent_seg.data import pipeline, records
from tf_recurrent_seg.defaults import HORSE_COW_CLASSES, parsing_config, referring_config, shrink_config
from tf_recurrent_seg.image_ops import resize_and_pad, unpad_and_resize
from tf_recurrent_seg.text import build_vocabulary

S = 32  # network input size of the stand-in models
REFERRING_SHAPES = [(50, 80), (90, 40), (33, 33), (70, 100), (20, 64), (64, 20), (45, 46)]
WORD_COUNTS = [1, 2, 3, 4, 5, 6, 23]  # ReferIt bins 1 | 2 | 3-4 | 5-20 (23 words -> truncated to 20)
WORDS = ["red", "blue", "left", "right", "the", "dog", "big", "small"]
PARSING_SHAPES = [(40, 60), (61, 30), (25, 25), (50, 90)]
NUM_PARTS = 5


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _image(rng, height, width):
    coarse = rng.integers(0, 256, (height // 6 + 2, width // 6 + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def _blob(rng, height, width):
    yy, xx = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
    return ((yy - cy) / (0.3 * height)) ** 2 + ((xx - cx) / (0.3 * width)) ** 2 < 1


@pytest.fixture(scope="module")
def referring_data(tmp_path_factory):
    """7 referring records of non-square images in 2 shards (manifest source: ReferItGame), a vocabulary."""
    directory = tmp_path_factory.mktemp("referring_eval")
    rng = np.random.default_rng(0)
    examples = []
    for index, ((height, width), words) in enumerate(zip(REFERRING_SHAPES, WORD_COUNTS)):
        expression = " ".join(rng.choice(WORDS, words).tolist())
        examples.append(
            {
                "image": _image(rng, height, width),
                "mask": _blob(rng, height, width),
                "expression": expression,
                "words": words,
            }
        )
    prefix = str(directory / "test")
    with records.ShardedRecordWriter(prefix, 2, task="referring", source="ReferItGame (test fixture)") as writer:
        for index, example in enumerate(examples):
            image = example["image"]
            writer.write(
                records.referring_example(
                    _png(image),
                    image.shape[0],
                    image.shape[1],
                    f"{index}.png",
                    example["mask"].astype(np.uint8),
                    example["expression"],
                    index,
                    index,
                    "referit",
                    "test",
                )
            )
    vocabulary = str(directory / "vocabulary.txt")
    build_vocabulary([e["expression"] for e in examples]).save(vocabulary)
    return {"prefix": prefix, "vocabulary": vocabulary, "examples": examples}


@pytest.fixture(scope="module")
def parsing_data(tmp_path_factory):
    """4 parsing records of non-square images with 5-class label maps holding some 255s."""
    directory = tmp_path_factory.mktemp("parsing_eval")
    rng = np.random.default_rng(1)
    examples = []
    for height, width in PARSING_SHAPES:
        labels = np.zeros((height, width), np.uint8)
        for part in range(1, NUM_PARTS):
            labels[_blob(rng, height, width)] = part
        labels[rng.random((height, width)) < 0.05] = 255
        examples.append({"image": _image(rng, height, width), "labels": labels})
    prefix = str(directory / "test")
    with records.ShardedRecordWriter(prefix, 1, task="parsing", source="PASCAL-Part horse (test fixture)") as writer:
        for index, example in enumerate(examples):
            image = example["image"]
            writer.write(
                records.parsing_example(
                    _png(image),
                    image.shape[0],
                    image.shape[1],
                    f"{index}.png",
                    example["labels"],
                    NUM_PARTS,
                    "horse_cow",
                    "test",
                )
            )
    return {"prefix": prefix, "examples": examples}


class LeftHalfReferringModel:
    """Stand-in referring model: logits +2 on the left half of the padded S x S input, -2 elsewhere."""

    def __call__(self, inputs, training=False):
        image = inputs["image"]
        assert image.shape[1:] == (S, S, 3) and inputs["tokens"].shape[1:] == (20,)
        left = tf.cast(tf.range(S) < S // 2, tf.float32) * 4.0 - 2.0
        logits = tf.zeros_like(image[..., :1]) + left[None, None, :, None]
        return {"logits": logits}


class BandsParsingModel:
    """Stand-in parsing model: class (column * C) // S, i.e. C vertical bands of the padded input."""

    def __call__(self, image, training=False):
        assert image.shape[1:] == (S, S, 3)
        band = (tf.range(S) * NUM_PARTS) // S
        logits = tf.one_hot(band, NUM_PARTS) * 3.0
        return {"logits": tf.zeros_like(image[..., :1]) + logits[None, None]}


def _left_half():
    padded = np.zeros((S, S), np.uint8)
    padded[:, : S // 2] = 1
    return padded


def _bands():
    return np.broadcast_to((np.arange(S) * NUM_PARTS) // S, (S, S)).astype(np.uint8)


def _referring_config(data):
    config = shrink_config(referring_config("rmi"))
    config.model.image_size = S
    config.data.eval_records = data["prefix"]
    config.data.vocabulary = data["vocabulary"]
    config.data.length_bins = None  # from the manifest's source: ReferItGame
    return config


def _expected_referring(examples, padded_prediction):
    """Reference numbers: the padded prediction mapped back with the numpy inverse, I and U with numpy."""
    inter, union, ious, words = [], [], [], []
    for example in examples:
        gt = example["mask"]
        placement = resize_and_pad(np.zeros(gt.shape, np.uint8), S)[1]
        pred = unpad_and_resize(padded_prediction, placement, gt.shape) > 0
        inter.append(np.logical_and(gt, pred).sum())
        union.append(np.logical_or(gt, pred).sum())
        ious.append(inter[-1] / union[-1])
        words.append(min(example["words"], 20))
    inter, union, ious, words = (np.array(v, np.float64) for v in (inter, union, ious, words))
    expected = {"overall_iou": inter.sum() / union.sum(), "mean_iou": ious.mean(), "num_examples": len(examples)}
    for t in (0.5, 0.6, 0.7, 0.8, 0.9):
        expected[f"precision@{t:g}"] = float(np.mean(ious >= t))
    by_length = {}
    for label, (low, high) in zip(["1", "2", "3-4", "5-20"], [(1, 1), (2, 2), (3, 4), (5, 20)]):
        member = (words >= low) & (words <= high)
        by_length[label] = {
            "overall_iou": inter[member].sum() / union[member].sum() if member.any() else 0.0,
            "num_examples": int(member.sum()),
        }
    return expected, by_length


def _check_referring(result, expected, by_length):
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    assert list(result["by_length"]) == list(by_length)
    for label, values in by_length.items():
        assert result["by_length"][label]["overall_iou"] == pytest.approx(values["overall_iou"], abs=1e-12), label
        assert result["by_length"][label]["num_examples"] == values["num_examples"], label


@pytest.fixture
def crf_stub(monkeypatch):
    """A stand-in `tf_recurrent_seg.crf`: referring -> the complement of logits >= 0; parsing -> C-1-argmax.
    Records the images it receives."""
    stub = types.ModuleType("tf_recurrent_seg.crf")
    stub.images = []

    def refine_referring(image, logits):
        size = logits.shape[0]  # S of the model under test
        assert image.dtype == np.uint8 and image.shape == (size, size, 3)
        assert logits.shape == (size, size) and np.issubdtype(logits.dtype, np.floating)
        stub.images.append(image)
        return logits < 0

    def refine_parsing(image, probabilities):
        size = probabilities.shape[0]
        assert image.dtype == np.uint8 and image.shape == (size, size, 3)
        assert probabilities.shape == (size, size, NUM_PARTS)
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
        stub.images.append(image)
        return (NUM_PARTS - 1 - np.argmax(probabilities, -1)).astype(np.int32)

    stub.refine_referring, stub.refine_parsing = refine_referring, refine_parsing
    monkeypatch.setitem(sys.modules, "tf_recurrent_seg.crf", stub)
    return stub


def test_referring_numbers_at_original_resolution(referring_data, crf_stub, tmp_path):
    # The evaluator with its explicit keywords (no config): length bins from the manifest's source.
    results = evaluation.evaluate_referring(
        LeftHalfReferringModel(),
        eval_records=referring_data["prefix"],
        vocabulary=referring_data["vocabulary"],
        image_size=S,
        method="R+RMI",
        crf=True,
        batch_size=3,
        out_dir=str(tmp_path),
    )
    examples = referring_data["examples"]
    assert results["task"] == "referring" and results["num_examples"] == 7
    assert results["length_bins_dataset"] == "referit" and results["length_bins"] == [[1, 1], [2, 2], [3, 4], [5, 20]]
    _check_referring(results["results"]["direct"], *_expected_referring(examples, _left_half()))
    _check_referring(results["results"]["dcrf"], *_expected_referring(examples, 1 - _left_half()))
    # The CRF saw the padded uint8 RGB input, recovered from the normalised batch (the pipeline's resize is
    # within 1 grey level of Pillow's).
    assert len(crf_stub.images) == 7
    for image, example in zip(crf_stub.images, examples):
        reference = resize_and_pad(example["image"], S)[0]
        assert np.abs(image.astype(int) - reference).max() <= 1
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["results"]["direct"]["overall_iou"] == results["results"]["direct"]["overall_iou"]
    tables = (tmp_path / "tables.md").read_text()
    assert "R+RMI+DCRF" in tables and "| Length | 1 | 2 | 3-4 | 5-20 |" in tables


def test_length_bins_count_tokens_with_punctuation_and_possessives():
    """Expressions are binned by their tokens (docs/decisions.md#length-bins). By hand, split on runs of
    non-word characters: "man's hat, left" -> man | ' | s | hat | , | left, 6 tokens (3 words): ReferIt
    bin 5-20, not 3-4; "left, man" -> left | , | man, 3 tokens (2 words): bin 3-4, not 2."""
    expressions = ["man's hat, left", "left, man"]
    table = pipeline.vocabulary_table(build_vocabulary(expressions))
    num_tokens = [int(pipeline.encode_tf(tf.constant(e), table)[1]) for e in expressions]  # what evaluation bins by
    assert num_tokens == [6, 3]
    truth = np.array([[[1, 1], [0, 0]], [[1, 1], [0, 0]]], np.float32)
    predicted = np.array([[[1, 1], [0, 0]], [[1, 1], [1, 1]]], np.float32)  # IoU 2/2 = 1 and 2/4 = 0.5
    metric = metrics_lib.LengthBinnedReferringMetrics(metrics_lib.length_bins("referit"))
    metric.update_state(truth, predicted, num_tokens)
    by_length = metric.results_by_bin()
    assert {label: by_length[label]["num_examples"] for label in by_length} == {"1": 0, "2": 0, "3-4": 1, "5-20": 1}
    assert by_length["5-20"]["overall_iou"] == 1.0 and by_length["3-4"]["overall_iou"] == 0.5


class WordParityReferringModel:
    """Stand-in referring model that reads the expression: the left half when it has an even number of tokens,
    nothing when odd."""

    def __call__(self, inputs, training=False):
        image = inputs["image"]
        even = tf.equal(tf.reduce_sum(tf.cast(inputs["tokens"] > 0, tf.int32), axis=1) % 2, 0)
        left = tf.cast(tf.range(S) < S // 2, tf.float32)
        logits = tf.where(even[:, None, None, None], left[None, None, :, None] * 4.0 - 2.0, -2.0)
        return {"logits": logits + tf.zeros_like(image[..., :1])}


def test_deranged_expressions_give_every_example_another_ones():
    batches = [({"tokens": tf.constant([[i, i]] * 2)}, {"num_tokens": tf.constant([i, i + 100])}) for i in range(5)]
    tokens, num_tokens = evaluation._deranged_expressions(batches, seed=3)
    original = np.repeat(np.arange(5), 2)
    assert sorted(tokens[:, 0].tolist()) == sorted(original.tolist())  # a permutation of the split's expressions
    order = np.array([[i, i + 100] for i in range(5)]).reshape(-1)
    assert all(num_tokens[k] != order[k] for k in range(10))  # nobody keeps its own


def test_shuffled_expressions_row_scores_the_images_with_other_expressions(referring_data):
    config = _referring_config(referring_data)
    results = cli.evaluate(WordParityReferringModel(), config, batch_size=3, shuffle_expressions=0)
    examples = referring_data["examples"]
    direct, shuffled = results["results"]["direct"], results["results"]["shuffled"]
    assert results["shuffle_expressions"] == 0 and direct["num_examples"] == shuffled["num_examples"] == 7
    # With the real expressions: the left half for even word counts, nothing for odd ones (numpy reference).
    for index, example in enumerate(examples):
        gt = example["mask"] > 0
        placement = resize_and_pad(np.zeros(gt.shape, np.uint8), S)[1]
        even = min(example["words"], 20) % 2 == 0  # tokens after truncation to 20
        predicted = unpad_and_resize(_left_half(), placement, gt.shape) > 0 if even else np.zeros_like(gt)
        assert direct["per_example"]["intersection"][index] == np.logical_and(gt, predicted).sum()
        assert direct["per_example"]["union"][index] == np.logical_or(gt, predicted).sum()
    assert direct["per_example"]["sent_id"] == list(range(7))
    # Shuffled: each image gets another example's expression, so exactly as many images as there are even-length
    # expressions get the left half (a prediction enlarges the union past the target), and the words differ.
    predicted_something = np.array(shuffled["per_example"]["union"]) > np.array([e["mask"].sum() for e in examples])
    assert predicted_something.sum() == sum(min(example["words"], 20) % 2 == 0 for example in examples)
    assert shuffled["overall_iou"] == pytest.approx(
        sum(shuffled["per_example"]["intersection"]) / sum(shuffled["per_example"]["union"]), abs=1e-12
    )


def test_referring_max_examples_and_batch_size(referring_data):
    config = _referring_config(referring_data)
    config.data.length_bins = "unc"
    results = cli.evaluate(LeftHalfReferringModel(), config, max_examples=5, batch_size=2)
    assert results["num_examples"] == 5 and results["crf"] is False and "dcrf" not in results["results"]
    expected, _ = _expected_referring(referring_data["examples"][:5], _left_half())
    for key, value in expected.items():
        assert results["results"]["direct"][key] == pytest.approx(value, abs=1e-12), key
    assert list(results["results"]["direct"]["by_length"]) == ["1-2", "3", "4-5", "6-20"]
    assert [v["num_examples"] for v in results["results"]["direct"]["by_length"].values()] == [2, 1, 2, 0]
    one_batch = cli.evaluate(LeftHalfReferringModel(), config, max_examples=5, batch_size=8)
    direct, single = results["results"]["direct"], one_batch["results"]["direct"]
    nested = ("by_length", "per_example")
    assert {k: v for k, v in single.items() if k not in nested} == pytest.approx(
        {k: v for k, v in direct.items() if k not in nested}, abs=1e-12
    )
    assert single["per_example"] == direct["per_example"]
    for label, values in direct["by_length"].items():
        assert single["by_length"][label] == pytest.approx(values, abs=1e-12)


def test_data_config_pixel_limit_skips_larger_images(referring_data):
    """`data.max_image_pixels` reaches the pipeline: images over it are counted as too_large, the rest scored."""
    config = _referring_config(referring_data)
    areas = sorted(height * width for height, width in REFERRING_SHAPES)
    config.data.max_image_pixels = areas[len(areas) // 2]
    results = cli.evaluate(LeftHalfReferringModel(), config, batch_size=2)
    too_large = sum(area > config.data.max_image_pixels for area in areas)
    assert too_large > 0 and results["skipped_records"]["too_large"] == too_large
    assert results["num_examples"] == len(areas) - too_large


def _expected_confusion(examples, padded_labels):
    confusion = np.zeros((NUM_PARTS, NUM_PARTS), np.int64)
    for example in examples:
        gt = example["labels"]
        placement = resize_and_pad(np.zeros(gt.shape, np.uint8), S)[1]
        pred = unpad_and_resize(padded_labels, placement, gt.shape)
        keep = gt != 255
        np.add.at(confusion, (gt[keep].astype(int), pred[keep].astype(int)), 1)
    return confusion


def test_parsing_confusion_at_original_resolution(parsing_data, crf_stub, tmp_path):
    results = evaluation.evaluate_parsing(
        BandsParsingModel(),
        eval_records=parsing_data["prefix"],
        num_classes=NUM_PARTS,
        image_size=S,
        class_names=HORSE_COW_CLASSES,
        method="LG-LSTM",
        crf=True,
        batch_size=3,
        out_dir=str(tmp_path),
    )
    assert results["task"] == "parsing" and results["num_examples"] == 4 and results["layout"] == "horse_cow"
    expected = _expected_confusion(parsing_data["examples"], _bands())
    assert expected.sum() > 0
    direct = results["results"]["direct"]
    np.testing.assert_array_equal(direct["confusion_matrix"], expected)
    assert direct["pixel_accuracy"] == pytest.approx(np.trace(expected) / expected.sum())
    refined = _expected_confusion(parsing_data["examples"], (NUM_PARTS - 1 - _bands()).astype(np.uint8))
    np.testing.assert_array_equal(results["results"]["dcrf"]["confusion_matrix"], refined)
    assert len(crf_stub.images) == 4
    tables = (tmp_path / "tables.md").read_text()
    assert "| Method | Bkg | head | body | leg | tail | Fg | IOU | Pix.Acc |" in tables
    assert "LG-LSTM+DCRF" in tables


def _in_unit_interval(values):
    for key, value in values.items():
        if isinstance(value, dict):
            _in_unit_interval(value)
        elif key not in ("num_examples", "pixels", "predicted_pixels", "num_pixels") and isinstance(value, float):
            assert 0.0 <= value <= 1.0, key


@pytest.fixture(scope="module")
def synthetic_dirs(tmp_path_factory):
    from data_tools.synthetic import write_synthetic

    directory = tmp_path_factory.mktemp("synthetic")
    write_synthetic("referring", str(directory / "referring"), num_train=6, num_test=5, seed=0, image_size=96)
    write_synthetic("parsing", str(directory / "parsing"), num_train=2, num_test=3, seed=0, image_size=70)
    return directory


def _tiny_referring(synthetic_dirs):
    config = shrink_config(referring_config("rmi"))
    config.data.eval_records = str(synthetic_dirs / "referring" / "test")
    config.data.vocabulary = str(synthetic_dirs / "referring" / "vocabulary.txt")
    config.data.length_bins = None  # from the manifest: synthetic
    return config


def test_end_to_end_tiny_rmi(synthetic_dirs, crf_stub, tmp_path):
    config = _tiny_referring(synthetic_dirs)
    model = models.build_model(config)
    results = cli.evaluate(model, config, crf=True, batch_size=2, out_dir=str(tmp_path))
    assert results["num_examples"] == 5 and results["method"] == "R+RMI"
    assert results["length_bins_dataset"] == "synthetic"
    for name in ("direct", "dcrf"):
        _in_unit_interval(results["results"][name])
        assert sum(v["num_examples"] for v in results["results"][name]["by_length"].values()) == 5
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["num_examples"] == 5
    assert "Overall IoU" in (tmp_path / "tables.md").read_text()


class CallOnly:
    """A referring model seen only through `__call__`: the evaluator runs it once per token batch."""

    def __init__(self, model):
        self.model = model

    def __call__(self, inputs, training=False):
        return self.model(inputs, training=training)


def test_shuffled_row_of_a_referring_model_equals_calling_it_with_the_other_tokens(synthetic_dirs):
    # A ReferringSegmenter runs its backbone once for both token batches; the result must be what two
    # plain calls give.
    config = _tiny_referring(synthetic_dirs)
    config.model.classifier_bias_init = 0.0  # random weights: logits around 0, so masks of some pixels
    model = models.build_model(config)
    fast = cli.evaluate(model, config, batch_size=2, shuffle_expressions=1)["results"]
    plain = cli.evaluate(CallOnly(model), config, batch_size=2, shuffle_expressions=1)["results"]
    for name in ("direct", "shuffled"):
        for key in ("intersection", "union"):
            assert fast[name]["per_example"][key] == plain[name]["per_example"][key], (name, key)
    assert fast["direct"]["per_example"]["union"] != fast["shuffled"]["per_example"]["union"]


def test_end_to_end_tiny_lg_lstm(synthetic_dirs, tmp_path):
    config = shrink_config(parsing_config("lg_lstm"))
    config.data.eval_records = str(synthetic_dirs / "parsing" / "test")
    model = models.build_model(config)
    results = cli.evaluate(model, config, batch_size=2, out_dir=str(tmp_path))
    assert results["num_examples"] == 3 and results["method"] == "LG-LSTM"
    direct = results["results"]["direct"]
    _in_unit_interval({k: v for k, v in direct.items() if k != "confusion_matrix"})
    assert np.sum(direct["confusion_matrix"]) == direct["num_pixels"] > 0
    json.loads((tmp_path / "metrics.json").read_text())
    assert "Pix.Acc" in (tmp_path / "tables.md").read_text()


def test_real_densecrf_when_available(synthetic_dirs):
    pytest.importorskip("pydensecrf.densecrf")
    try:
        import tf_recurrent_seg.crf as crf
    except ImportError:
        pytest.skip("tf_recurrent_seg.crf is not there yet")
    if not hasattr(crf, "refine_referring"):
        pytest.skip("tf_recurrent_seg.crf has no refine_referring yet")
    config = _tiny_referring(synthetic_dirs)
    results = cli.evaluate(models.build_model(config), config, crf=True, max_examples=2, batch_size=2)
    assert results["num_examples"] == 2
    _in_unit_interval(results["results"]["dcrf"])


def test_cli_writes_into_workdir_eval(synthetic_dirs, crf_stub, tmp_path, capsys):
    config = _tiny_referring(synthetic_dirs)
    run_dir = tmp_path / "run"
    workdir.save_config(config.to_json_best_effort(indent=2), str(run_dir))
    model = models.build_model(config)
    tf.train.Checkpoint(model=model).save(str(run_dir / workdir.CHECKPOINT_DIR / "ckpt"))
    flag_values = flags.FlagValues()
    cli.define_flags(flag_values)
    flag_values(["evaluate", f"--workdir={run_dir}", "--crf", "--max_examples=3", "--batch_size=2"])
    results = cli.main(["evaluate"], flag_values)
    assert results["num_examples"] == 3
    eval_dir = run_dir / workdir.EVAL_DIR
    saved = json.loads((eval_dir / "metrics.json").read_text())
    assert saved["results"]["dcrf"]["num_examples"] == 3
    printed = capsys.readouterr().out
    assert "R+RMI+DCRF" in printed and (eval_dir / "tables.md").read_text() in printed

    # --baseline: another run's results appear in the tables, with the relative gain per length group.
    flag_values = flags.FlagValues()
    cli.define_flags(flag_values)
    out_dir = tmp_path / "compare"
    flag_values(
        ["evaluate", f"--workdir={run_dir}", "--max_examples=3", f"--baseline={run_dir}", f"--out_dir={out_dir}"]
    )
    cli.main(["evaluate"], flag_values)
    tables = (out_dir / "tables.md").read_text()
    assert "R+RMI (baseline)" in tables and "Relative Gain" in tables


def test_run_config_gives_the_row_labels_and_the_evaluator(parsing_data):
    assert cli.referring_method(referring_config("rmi").model) == "R+RMI"
    assert cli.referring_method(referring_config("lstm", "deeplab").model) == "D+LSTM"
    labels = {"lg_lstm": "LG-LSTM", "conv_baseline": "VGG16", "conv_baseline_extra": "VGG16 extra conv"}
    for name, label in labels.items():
        assert cli.parsing_method(parsing_config(name).model) == label
    ablation = parsing_config("lg_lstm").model
    ablation.update({"neighbourhood": 4, "use_global": False})
    assert cli.parsing_method(ablation) == "LG-LSTM local 4 w/o global"
    assert set(cli.EVALUATORS) == {task.family for task in tasks.TASKS.values()}  # every model has its evaluator
    config = shrink_config(parsing_config("lg_lstm"))
    config.data.eval_records = parsing_data["prefix"]
    with pytest.raises(ValueError, match="shuffle_expressions does not apply to lg_lstm"):
        cli.evaluate(BandsParsingModel(), config, shuffle_expressions=0)
    config.model.name = "unknown"
    with pytest.raises(ValueError, match="config.model.name must be one of"):
        cli.evaluate(BandsParsingModel(), config)


# --- tables and helpers ------------------------------------------------------------------------------------------


def _referring_result(method, overall, by_length, crf=None):
    entry = lambda iou: {"overall_iou": iou, "mean_iou": iou, "precision@0.5": 0.5, "num_examples": 10}  # noqa: E731
    direct = {**entry(overall), "by_length": {label: entry(iou) for label, iou in by_length.items()}}
    results = {
        "task": "referring",
        "method": method,
        "num_examples": 10,
        "results": {"direct": direct},
        "length_bins_dataset": "unc",
    }
    if crf is not None:
        results["results"]["dcrf"] = {**entry(crf), "by_length": {label: entry(crf) for label in by_length}}
    return results


def test_referring_table_layout_and_relative_gain():
    bins = ["1-2", "3", "4-5", "6-20"]
    ours = _referring_result("R+RMI", 0.4, dict(zip(bins, [0.30, 0.50, 0.24, 0.10])), crf=0.45)
    base = _referring_result("R+LSTM", 0.35, dict(zip(bins, [0.25, 0.40, 0.30, 0.08])))
    table = evaluation.format_referring_table(ours, base)
    lines = table.splitlines()
    assert "| Method | prec@0.5 | Overall IoU | Mean IoU (not in paper) |" in lines
    assert "| R+LSTM | 50.00 | 35.00 | 35.00 |" in lines
    assert "| R+RMI | 50.00 | 40.00 | 40.00 |" in lines and "| R+RMI+DCRF | 50.00 | 45.00 | 45.00 |" in lines
    assert "Overall IoU by expression length in tokens (RMI paper Tables 2-5 layout; bins of unc; %)" in lines
    assert "| Length | 1-2 | 3 | 4-5 | 6-20 |" in lines
    assert "| R+LSTM | 25.00 | 40.00 | 30.00 | 8.00 |" in lines
    # (30 - 25) / 25 = 20%, (50 - 40) / 40 = 25%, (24 - 30) / 30 = -20%, (10 - 8) / 8 = 25%
    assert "| Relative Gain | 20.00% | 25.00% | -20.00% | 25.00% |" in lines
    assert "| Expressions | 10 | 10 | 10 | 10 |" in lines


def test_parsing_table_layouts():
    confusion = np.array([[3, 0, 1], [0, 3, 0], [0, 1, 2]])
    from tf_recurrent_seg.metrics import parsing_scores

    scores = parsing_scores(confusion, ["background", "hat", "hair"])
    atr = evaluation.format_parsing_table(scores, "atr")
    assert (
        "| Method | Acc. | F.g. acc. | Avg. prec. | Avg. recall | Avg. F-1 score | Avg. prec. w/o bkg "
        "| Avg. recall w/o bkg | Avg. F-1 w/o bkg |"
    ) in atr
    # hand values (tests/test_metrics.py): acc 8/10, fg acc 5/6, avg P/R/F-1 29/36, 29/36, 50/63; w/o bkg
    # 17/24, 5/6, 16/21
    assert "| LG-LSTM | 80.00 | 83.33 | 80.56 | 80.56 | 79.37 | 70.83 | 83.33 | 76.19 |" in atr
    assert "| Method | hat | hair |" in atr and "| LG-LSTM | 85.71 | 66.67 |" in atr
    horse = evaluation.format_parsing_table({"A": scores, "B": scores}, "horse_cow")
    # per-class IoU 3/4, 3/4, 1/2; Fg IoU 6/7; mean IoU 2/3; pixel accuracy 0.8
    assert "| Method | Bkg | hat | hair | Fg | IOU | Pix.Acc |" in horse
    assert horse.count("| 75.00 | 75.00 | 50.00 | 85.71 | 66.67 | 80.00 |") == 2


@pytest.mark.parametrize("normalization", ["bgr_minus_caffe_resnet_mean", "bgr_minus_imagenet_mean"])
def test_denormalize_inverts_the_pipeline(normalization):
    images = np.random.default_rng(0).integers(0, 256, (2, 9, 7, 3), dtype=np.uint8)
    normalized = image_ops.normalize_images(images, normalization).numpy()
    np.testing.assert_array_equal(image_ops.denormalize_images(normalized, normalization), images)


def test_dataset_from_manifest_source_and_layouts():
    assert evaluation.dataset_from_source("RefCOCOg (refcocog/refs(umd).p ...)") == "gref"
    assert evaluation.dataset_from_source("RefCOCO+ (refcoco+/refs(unc).p ...)") == "unc+"
    assert evaluation.dataset_from_source("RefCOCO (refcoco/refs(unc).p ...)") == "unc"
    assert evaluation.dataset_from_source("ReferItGame (text_objseg ...)") == "referit"
    assert evaluation.dataset_from_source("synthetic") == "synthetic"
    assert evaluation.dataset_from_source("ATR from data") is None and evaluation.dataset_from_source(None) is None
    assert evaluation.parsing_layout(["background", "head", "body", "leg", "tail"]) == "horse_cow"
    assert evaluation.parsing_layout(["background", "hat"]) == "atr"
    assert evaluation.parsing_layout(["background", "hat"], "PASCAL-Part cow") == "horse_cow"


def test_write_results_is_strict_json(tmp_path):
    results = _referring_result("D+LSTM", float("nan"), {"1": 0.5})
    paths = evaluation.write_results(results, str(tmp_path / "out"))
    saved = json.loads(open(paths["metrics"]).read())
    assert saved["results"]["direct"]["overall_iou"] is None
    assert "| D+LSTM | 50.00 | - | - |" in open(paths["tables"]).read()
    assert evaluation.load_results(str(tmp_path / "out"))["method"] == "D+LSTM"
    with pytest.raises(FileNotFoundError):
        evaluation.load_results(str(tmp_path / "missing"))
    assert math.isnan(results["results"]["direct"]["overall_iou"])  # the caller's dict is left alone
