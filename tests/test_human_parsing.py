"""Co-CNN's training side: the human-parsing schema and factory, the non-square pipeline with super-pixel inputs
and image-level labels, the image-label loss, and a few training steps of the smoke config
(`defaults.human_parsing_config`, `tasks.HumanParsingTask`, `pipeline.parsing_dataset`)."""

import importlib.util
import inspect
import math

import numpy as np
import pytest
import tensorflow as tf

from tf_recurrent_seg import defaults, image_ops, losses, training, workdir
from tf_recurrent_seg.cli import evaluate as cli_evaluate
from tf_recurrent_seg.data import pipeline, records
from tf_recurrent_seg.data.superpixels import superpixel_inputs
from tf_recurrent_seg.models import CoCNNSegmenter, build_model
from tf_recurrent_seg.models.factory import build_cocnn
from tf_recurrent_seg.tasks import HumanParsingTask, get_task, model_names

NUM_CLASSES = len(defaults.ATR_CLASSES)
SIZE = (24, 16)  # the smoke variant's input (height, width)
SUPERPIXELS = {"num_segments": 12, "max_segments": 16, "method": "slic"}


def _smoke(model: str = "cocnn"):
    return defaults.shrink_config(defaults.human_parsing_config(model))


@pytest.fixture(scope="module")
def atr_records(tmp_path_factory) -> str:
    """Six smooth 40x30 / 30x44 images with random ATR label maps (255 on the first row), one shard."""
    rng = np.random.default_rng(3)
    prefix = str(tmp_path_factory.mktemp("human") / "train")
    with records.ShardedRecordWriter(prefix, 1, task="parsing", source="test") as writer:
        for index in range(6):
            height, width = (40, 30) if index % 2 else (30, 44)
            coarse = rng.integers(0, 256, (height // 5 + 1, width // 5 + 1, 3))
            image = np.kron(coarse, np.ones((5, 5, 1)))[:height, :width].astype(np.uint8)
            labels = rng.integers(0, NUM_CLASSES, (height, width)).astype(np.uint8)
            labels[0] = 255
            encoded = tf.io.encode_png(image).numpy()
            writer.write(records.parsing_example(encoded, height, width, f"{index}.png", labels, 18, "test", "t"))
    return prefix


def test_schema_is_locked_and_mirrors_the_model_arguments():
    config = defaults.human_parsing_config("cocnn")
    arguments = set(inspect.signature(CoCNNSegmenter.__init__).parameters) - {"self", "kwargs", "image_shape"}
    assert set(config.model) == arguments | {"name", "class_names", "image_height", "image_width"}
    assert (config.model.image_height, config.model.image_width, config.model.num_classes) == (150, 100, 18)
    assert config.model.class_names == defaults.ATR_CLASSES and config.model.conv_init_stddev == 0.001
    assert config.data.left_right_pairs == defaults.ATR_LEFT_RIGHT_PAIRS
    assert (config.train.learning_rate, config.train.momentum, config.train.weight_decay) == (1e-3, 0.9, 5e-4)
    assert config.train.batch_size == 2 and set(defaults.loop_config()) <= set(config.train)
    assert defaults.human_parsing_config("lg_lstm_cocnn").model.lg_lstm_layers == 5
    for section, misspelt in ((config.model, "image_size"), (config.data, "superpixels"), (config.train, "lr")):
        with pytest.raises(AttributeError, match="locked"):
            setattr(section, misspelt, 1)
    with pytest.raises(ValueError, match=r"^model must be one of \('cocnn', 'lg_lstm_cocnn'\), got 'lg_lstm'$"):
        defaults.human_parsing_config("lg_lstm")
    with pytest.raises(ValueError, match="got 'cocnn'$"):
        defaults.parsing_config("cocnn")  # same family, another schema
    assert model_names("parsing")[-2:] == ("cocnn", "lg_lstm_cocnn")
    assert isinstance(get_task(config), HumanParsingTask) and get_task(config).family == "parsing"


@pytest.mark.parametrize("name, expected", [("cocnn", 33_089_050), ("lg_lstm_cocnn", 34_372_026)])
def test_factory_builds_the_paper_models(name, expected):
    # The counts of docs/cocnn.md#parameter-count.
    assert build_model(defaults.human_parsing_config(name)).count_params() == expected


@pytest.mark.parametrize("name", ["cocnn", "lg_lstm_cocnn"])
def test_factory_passes_every_field(name):
    config = _smoke(name)
    config.model.use_label_branch = False
    model = build_model(config)
    m = config.model
    reference = CoCNNSegmenter(
        **{key: m[key] for key in m if key not in ("name", "class_names", "image_height", "image_width")},
        image_shape=(m.image_height, m.image_width, 3),
    )
    assert model.count_params() == reference.count_params()
    assert model.get_config()["lg_lstm_layers"] == m.lg_lstm_layers and set(model.input) == set(reference.input)


def test_factory_refuses_another_model_in_one_line():
    config = _smoke()
    config.model.name = "lg_lstm"
    with pytest.raises(ValueError) as raised:
        build_cocnn(config)
    assert str(raised.value) == (
        "config.model.name must be one of ['cocnn', 'lg_lstm_cocnn'] for build_cocnn, got 'lg_lstm'"
    )


def _numpy_presence(labels: np.ndarray) -> np.ndarray:
    present = np.zeros(NUM_CLASSES, np.float32)
    present[np.unique(labels[labels < NUM_CLASSES])] = 1
    return present / max(present.sum(), 1)


# The super-pixels come from scikit-image, an optional extra (`pip install -e ".[human]"`; `make` installs it).
needs_skimage = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None, reason="scikit-image (the `human` extra) computes the super-pixels"
)


@needs_skimage
@pytest.mark.parametrize("training_", [True, False])
def test_non_square_batches_with_superpixels_and_image_labels(atr_records, training_):
    dataset = pipeline.parsing_dataset(
        atr_records,
        training=training_,
        batch_size=2,
        num_classes=NUM_CLASSES,
        image_size=SIZE,
        seed=0,
        scale_from_fit=True,
        superpixels=SUPERPIXELS,
        image_labels=True,
    )
    features, targets = next(iter(dataset))
    assert features["image"].shape == (2, *SIZE, 3) and targets["labels"].shape == (2, *SIZE)
    assert features["segments"].shape == (2, *SIZE) and features["segments"].dtype == tf.int32
    assert features["neighbour_weights"].shape == (2, 16, 16) and targets["image_labels"].shape == (2, 18)
    # The pipeline normalised uint8 pixels: the exact image the super-pixels were computed on comes back.
    images = image_ops.denormalize_images(features["image"].numpy(), image_ops.PARSING_NORMALIZATION)
    for index in range(2):
        expected = superpixel_inputs(images[index], **SUPERPIXELS)
        np.testing.assert_array_equal(features["segments"][index].numpy(), expected["segments"])
        np.testing.assert_allclose(features["neighbour_weights"][index].numpy(), expected["neighbour_weights"])
        labels = targets["labels"][index].numpy()
        np.testing.assert_allclose(targets["image_labels"][index].numpy(), _numpy_presence(labels), rtol=1e-6)
        assert math.isclose(float(tf.reduce_sum(targets["image_labels"][index])), 1.0, rel_tol=1e-6)


def test_square_int_size_keeps_the_old_elements(atr_records):
    features, targets = next(
        iter(pipeline.parsing_dataset(atr_records, training=False, batch_size=1, num_classes=18, image_size=20))
    )
    assert set(features) == {"image"} and set(targets) == {"labels", "original_labels", "original_size", "placement"}
    assert features["image"].shape == (1, 20, 20, 3)
    with pytest.raises(ValueError, match="image_size must be a positive integer or a"):
        pipeline.parsing_dataset(atr_records, training=False, batch_size=1, num_classes=18, image_size=(20, 0))
    with pytest.raises(ValueError, match="superpixels takes the keys"):
        pipeline.parsing_dataset(atr_records, training=False, batch_size=1, num_classes=18, superpixels={"k": 1})


def test_non_square_flip_swaps_atr_left_right_ids():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, SIZE).astype(np.int32)
    labels[0, :3] = 255
    swap = pipeline.flip_swap_table(defaults.ATR_LEFT_RIGHT_PAIRS, NUM_CLASSES)
    permutation = np.arange(256)
    for left, right in defaults.ATR_LEFT_RIGHT_PAIRS:
        permutation[left], permutation[right] = right, left
    seen = set()
    for seed in range(12):
        out_image, out_labels = pipeline.augment_parsing_example(
            image, labels, tf.constant([seed, 2], tf.int64), image_size=SIZE, scale_range=(1.0, 1.0), swap_table=swap
        )
        flipped = not np.array_equal(out_image.numpy(), image)
        seen.add(flipped)
        expected_image, expected_labels = (image[:, ::-1], permutation[labels[:, ::-1]]) if flipped else (image, labels)
        np.testing.assert_array_equal(out_image.numpy(), expected_image)
        np.testing.assert_array_equal(out_labels.numpy(), expected_labels)
    assert seen == {True, False}


def test_image_label_loss_matches_numpy():
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.ones(NUM_CLASSES), 3).astype(np.float32)
    targets = np.stack([_numpy_presence(rng.integers(0, NUM_CLASSES, 5)) for _ in range(3)])
    expected = np.mean(np.sum((probabilities - targets) ** 2, axis=1))
    assert float(losses.image_label_loss(probabilities, targets)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="must both have shape"):
        losses.image_label_loss(probabilities, targets[:, :3])


@needs_skimage
@pytest.mark.parametrize("name", ["cocnn", "lg_lstm_cocnn"])
def test_smoke_config_trains_end_to_end(atr_records, tmp_path, name):
    config = _smoke(name)
    config.data.train_records = config.data.eval_records = atr_records
    summary = training.train(config, str(tmp_path), "one_device")
    assert summary["final_step"] == config.train.num_steps
    assert summary["losses"] and all(np.isfinite(loss) for _, loss in summary["losses"])
    assert set(summary["eval"]) >= {"pixel_accuracy_at_input_size", "mean_iou_at_input_size"}
    # The run evaluates like any parsing run: the saved model, the papers' metrics at the original size.
    model, run_config = workdir.load_model(str(tmp_path))
    results = cli_evaluate.evaluate(model, run_config, run_dir=str(tmp_path), max_examples=3)
    direct = results["results"]["direct"]
    assert results["num_examples"] == 3 and results["method"] == {"cocnn": "Co-CNN", "lg_lstm_cocnn": "LG-LSTM"}[name]
    assert 0.0 <= direct["pixel_accuracy"] <= 1.0 and len(direct["per_class"]) == NUM_CLASSES
