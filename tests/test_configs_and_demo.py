"""Every config file loads and builds in its smoke variant; preprocessing follows
docs/reference_conventions.md#image-preprocessing; the demo runs."""

import pathlib
import runpy
import subprocess
import sys

import numpy as np
import pytest

from tf_recurrent_seg.image_ops import CAFFE_BGR_MEAN, caffe_preprocess, resize_and_pad, unpad_and_resize
from tf_recurrent_seg.models import build_lstm_baseline, build_model, build_rmi
from tf_recurrent_seg.pretraining import build_pretraining_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((ROOT / "configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_config_smoke_variant_builds(path):
    with pytest.raises(ValueError, match="unknown config variant"):
        runpy.run_path(str(path))["get_config"]("huge")
    config = runpy.run_path(str(path))["get_config"]("smoke")
    if "image_height" in config.model:  # Co-CNN: H x W images, super-pixel inputs
        height, width, segments = config.model.image_height, config.model.image_width, config.model.max_segments
        inputs = {
            "image": np.zeros((1, height, width, 3), np.float32),
            "segments": np.zeros((1, height, width), np.int32),
            "neighbour_weights": np.zeros((1, segments, segments), np.float32),
        }
        if not config.model.use_superpixels:
            inputs = inputs["image"]
        assert build_model(config)(inputs)["logits"].shape == (1, height, width, config.model.num_classes)
        return
    size = config.model.image_size
    image = np.zeros((1, size, size, 3), np.float32)
    if config.model.name == "backbone_pretraining":
        outputs = build_pretraining_model(config)(image)
        assert [outputs[name].shape[-1] for name in ("shape", "colour", "size")] == [7, 7, 3]
    elif config.model.name in ("rmi", "lstm"):
        model = {"rmi": build_rmi, "lstm": build_lstm_baseline}[config.model.name](config)
        tokens = np.zeros((1, config.model.max_words), np.int32)
        tokens[0, -2:] = [4, 5]
        assert model({"image": image, "tokens": tokens})["logits"].shape == (1, size, size, 1)
    else:
        assert build_model(config)(image)["logits"].shape == (1, size, size, config.model.num_classes)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_config_is_locked_so_a_misspelt_field_fails(path):
    config = runpy.run_path(str(path))["get_config"]()
    config.train.num_steps = 7  # an existing field: fine
    # Co-CNN has no backbone section (trained from scratch): its data section stands in for it.
    third = config.model.backbone if "backbone" in config.model else config.data
    for section, misspelt in ((config.train, "num_step"), (config.model, "imag_size"), (third, "x")):
        with pytest.raises(AttributeError, match="locked"):
            setattr(section, misspelt, 1)


def test_a_variant_for_another_model_is_refused_in_one_line():
    get_config = runpy.run_path(str(ROOT / "configs" / "rmi_synthetic.py"))["get_config"]
    with pytest.raises(
        ValueError, match=r"^config variant 'local2' does not apply to 'rmi' \(no \['neighbourhood'\]\)$"
    ):
        get_config("local2")


@pytest.mark.parametrize(
    "derived, base, name",
    [("lstm_synthetic", "rmi_synthetic", "lstm"), ("conv_baseline_synthetic", "lg_lstm_synthetic", "conv_baseline")],
)
def test_derived_synthetic_configs_change_only_the_model(derived, base, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the sibling is found next to the file, not from the working directory
    for variant in (None, "smoke"):
        derived_config = runpy.run_path(str(ROOT / "configs" / f"{derived}.py"))["get_config"](variant).to_dict()
        base_config = runpy.run_path(str(ROOT / "configs" / f"{base}.py"))["get_config"](variant).to_dict()
        assert derived_config["model"].pop("name") == name
        base_config["model"].pop("name")
        assert derived_config == base_config


def test_caffe_preprocess_is_bgr_minus_mean():
    image = np.array([[[10, 20, 30]]], np.uint8)
    np.testing.assert_allclose(
        caffe_preprocess(image)[0, 0], [30 - 104.00698793, 20 - 116.66876762, 10 - 122.67891434], atol=1e-4
    )
    gray = np.full((2, 2), 7, np.uint8)
    np.testing.assert_allclose(caffe_preprocess(gray)[0, 0], 7 - CAFFE_BGR_MEAN, atol=1e-4)
    rgba = np.zeros((1, 1, 4), np.uint8)
    assert caffe_preprocess(rgba).shape == (1, 1, 3)


def test_resize_and_pad_places_centred_and_inverts():
    image = np.zeros((100, 50, 3), np.uint8)
    padded, placement = resize_and_pad(image, 320)
    # scale = min(320/100, 320/50) = 3.2 -> 320 x 160, left pad floor((320 - 160) / 2) = 80.
    assert padded.shape == (320, 320, 3) and placement == (0, 80, 320, 160)
    mask = np.zeros((320, 320), np.uint8)
    mask[:, 80:240] = 1
    np.testing.assert_array_equal(unpad_and_resize(mask, placement, (100, 50)), np.ones((100, 50)))


@pytest.mark.large  # paper-size models: make test-large (the default suite is at its 20-minute limit)
def test_showcase_writes_its_figures(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tf_recurrent_seg.demo.showcase",
            f"--output_dir={tmp_path}",
            "--expression=the blue square",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rmi forward pass at 320x320" in result.stdout
    assert (tmp_path / "prediction.png").stat().st_size > 0 and (tmp_path / "rmi_steps.png").stat().st_size > 0


def test_lg_lstm_config_ablation_variants():
    get_config = runpy.run_path(str(ROOT / "configs" / "lg_lstm_horse_cow_vgg.py"))["get_config"]
    assert get_config().model.neighbourhood == 8 and get_config().model.use_global
    assert get_config("local2,smoke").model.neighbourhood == 2 and get_config("local2,smoke").model.image_size == 64
    assert get_config("local4").model.neighbourhood == 4 and not get_config("no_global").model.use_global
    baseline = runpy.run_path(str(ROOT / "configs" / "conv_baseline_horse_cow_vgg.py"))["get_config"]
    assert baseline().model.extra_convs == 0 and baseline("extra,smoke").model.extra_convs == 5


def test_demo_quick_budget_runs_every_step(tmp_path):
    """Data (3 splits), pretraining, both referring heads, two parsing models, test evaluations (DenseCRF,
    shuffled expressions), SavedModel exports, predictions, figures and the report, on tiny budgets."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tf_recurrent_seg.demo",
            "--budget=quick",
            f"--report_dir={tmp_path}/report",
            f"--data_dir={tmp_path}/data",
            f"--runs_dir={tmp_path}/runs",
            f"--export_dir={tmp_path}/saved",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (tmp_path / "report" / "REPORT.md").read_text()
    for heading in (
        "## What this run shows",
        "## Blind rules and models on the test split",
        "## Backbone pretraining",
        "RMI paper Table 1 layout",
        "Tables 2-5 layout",
        "LG-LSTM paper Table 5 layout",
        "## Figures",
        "## Commands",
    ):
        assert heading in report, heading
    assert report.index("## Blind rules") < report.index("RMI paper Table 1 layout")  # the blind rules come first
    for row in (
        "| rule: every object of the named shape |",
        "| LSTM, expressions shuffled across scenes |",
        "| rule: silhouette as",
        "| Relative gain of RMI |",
        "| lg_lstm |",
        "| conv_baseline |",
    ):
        assert row in report, row
    assert "test split is scored once" in report and "Training seeds: 0 for each referring head" in report
    assert "LG-LSTM above lg_lstm_local2 (mean IoU): **not run at this budget**" in report  # a budget's missing runs
    for figure in (
        "rmi_0_steps.png",
        "rmi_0_responses.png",
        "parsing_lg_lstm_legend.png",
        "validation_referring.png",
        "validation_parsing.png",
        "iou_by_length.png",
        "per_class_iou.png",
        "blind_rules.png",
    ):
        assert (tmp_path / "report" / figure).stat().st_size > 0, figure
    assert (tmp_path / "runs" / "backbone" / "backbone.keras").exists()
    assert (tmp_path / "saved" / "demo_rmi" / "1").is_dir() and (tmp_path / "saved" / "demo_lg_lstm" / "1").is_dir()


def test_demo_seed_flags_override_the_budget():
    from absl import flags

    from tf_recurrent_seg.demo.job import BUDGETS, budget_from_flags, budget_name, define_flags

    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["demo", "--budget=full", "--parsing_seeds=3"])
    budget = budget_from_flags(flag_values)
    assert budget["parsing_seeds"] == 3 and budget["referring_seeds"] == BUDGETS["full"]["referring_seeds"]
    assert BUDGETS["full"]["parsing_seeds"] == 1  # the table itself is not changed
    assert budget_name(budget, "full") == "`full` (parsing seeds 3)"
    assert budget_name(BUDGETS["default"], "default") == "`default`"
    with pytest.raises(flags.IllegalFlagValueError):
        flag_values(["demo", "--referring_seeds=-1"])


def test_demo_starts_every_run_afresh(tmp_path, capsys):
    """A second `make demo` (other budget, new backbone) must not resume the first one's checkpoints."""
    from tf_recurrent_seg.demo.job import Steps

    stale = tmp_path / "rmi_seed0" / "checkpoints"
    stale.mkdir(parents=True)
    (stale / "ckpt-1500.index").write_text("from an earlier run")
    assert Steps().fresh(str(tmp_path / "rmi_seed0")) == str(tmp_path / "rmi_seed0")
    assert not (tmp_path / "rmi_seed0").exists()
    assert "removing the previous run" in capsys.readouterr().out
    assert Steps().fresh(str(tmp_path / "never_made")) == str(tmp_path / "never_made")  # nothing to remove: no error


def test_demo_runs_every_command_with_one_inter_op_thread(capsys):
    """With two inter-op threads, two pretrainings of one seed ended with different weights (docs/training.md)."""
    from tf_recurrent_seg.demo.job import Job, Steps

    # The demo echoes a command's lines that say "wrote" (its progress lines).
    show = (
        "import os; print('wrote threads', os.environ['TF_NUM_INTRAOP_THREADS'], os.environ['TF_NUM_INTEROP_THREADS'])"
    )
    steps = Steps()
    steps.run([Job("one", "show the threads", ["-c", show], threads=3), Job("two", "again", ["-c", show])])
    printed = capsys.readouterr().out
    assert "wrote threads 3 1" in printed and f"wrote threads {steps.threads_per_job} 1" in printed, printed


def test_demo_report_states_a_claim_only_beyond_twice_the_standard_error():
    from tf_recurrent_seg.demo.report import mean_sd, pct, verdict

    assert mean_sd([0.3, 0.5]) == pytest.approx((0.4, np.sqrt(0.02)))
    # difference 0.1; SE = sqrt(0.01^2/3 + 0.01^2/3) = 0.00816 -> 2 SE = 0.0163 < 0.1: holds
    assert verdict([0.49, 0.50, 0.51], [0.39, 0.40, 0.41])[0] == "holds"
    assert verdict([0.39, 0.40, 0.41], [0.49, 0.50, 0.51])[0].startswith("does not hold")
    # difference 0.02 against 2 SE = 2 * sqrt(2 * 0.1^2 / 3) = 0.163: not distinguishable
    assert verdict([0.4, 0.5, 0.6], [0.38, 0.48, 0.58])[0] == "not distinguishable at this budget"
    assert verdict([0.9], [0.1])[0].startswith("not distinguishable (one seed")
    assert pct([0.4, 0.5]) == "45.00 ± 7.07" and pct(0.123) == "12.30" and pct(None) == "—"


def test_demo_starts_the_shortest_referring_run_first_then_longest_first():
    """The first referring run builds the shared feature cache: the shortest (the LSTM head), beside the longest
    parsing run. The other runs follow longest first (steps x measured ms per step)."""
    from tf_recurrent_seg.demo.job import BUDGETS, Job, in_priority_order

    budget = BUDGETS["full"]
    referring = {name: Job(name, name, []) for name in ("lstm_seed0", "rmi_seed0", "lstm_seed1", "rmi_seed1")}
    parsing = {name: Job(name, name, []) for name in ("conv_baseline_seed0", "lg_lstm_seed0")}
    order = [job.name for job in in_priority_order(referring, parsing, budget)]
    # full budget: lg_lstm 3000 x 220 ms = 660 s, rmi 5000 x 80 = 400 s, conv 3000 x 80 = 240 s, lstm 5000 x 42 = 210 s
    assert order == ["lstm_seed0", "lg_lstm_seed0", "rmi_seed0", "rmi_seed1", "conv_baseline_seed0", "lstm_seed1"]
    default = BUDGETS["default"]  # lg_lstm 2000 x 220 = 440 s, rmi 4000 x 80 = 320 s, conv 240 s, lstm 210 s
    assert [job.name for job in in_priority_order(dict(list(referring.items())[:2]), parsing, default)] == [
        "lstm_seed0",
        "lg_lstm_seed0",
        "rmi_seed0",
        "conv_baseline_seed0",
    ]
