"""`make demo`: the main job on the built-in synthetic data, on a CPU, end to end.

    python -m tf_recurrent_seg.demo [--budget=full|quick] [--report_dir=reports/demo]

As in the papers, the models start from a pretrained backbone: the job first pretrains the small ResNet of the
synthetic configs on scenes of its own (`tf_recurrent_seg.pretraining`, the stand-in for ImageNet / PASCAL),
then trains the LSTM baseline and RMI heads on its frozen, cached features (several seeds each) and the five
Table 5 parsing models fine-tuned from it (same steps each). Everything is chosen on the validation split; the
test split is scored once, at the end, with and without DenseCRF and, for the referring models, with the
expressions shuffled across scenes. It exports SavedModels and TFLite models into `saved_models/`, draws the
papers' figures and the learning curves, and writes `reports/demo/REPORT.md` (`tf_recurrent_seg.demo_report`).
Every step runs as the command line the report quotes, so each number can be reproduced with the command
printed next to it. The report states what was measured, whatever it shows.
"""

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time

from absl import flags

from tf_recurrent_seg.cli.common import run_app

# (name, config, variants) of the parsing runs, in the order Table 5 lists them.
PARSING_RUNS = [
    ("conv_baseline", "configs/conv_baseline_synthetic.py", ""),
    ("conv_baseline_extra", "configs/conv_baseline_synthetic.py", "extra"),
    ("lg_lstm", "configs/lg_lstm_synthetic.py", ""),
    ("lg_lstm_local2", "configs/lg_lstm_synthetic.py", "local2"),
    ("lg_lstm_no_global", "configs/lg_lstm_synthetic.py", "no_global"),
]
REFERRING_MODELS = ("lstm", "rmi")
REFERRING_IMAGE_SIZE, PARSING_IMAGE_SIZE = 128, 97
BUDGETS = {
    # About 100 minutes on a 2-core CPU; step counts chosen on the validation split (see defaults.py).
    "full": {"referring_train": 3000, "referring_validation": 300, "referring_test": 600,
             "parsing_train": 1200, "parsing_validation": 120, "parsing_test": 120,
             "pretrain_steps": 600, "lstm_steps": 5000, "rmi_steps": 5000, "parsing_steps": 3000,
             "referring_seeds": 3, "parsing_seeds": 1, "figures": 1,
             "parsing_runs": [name for name, _, _ in PARSING_RUNS], "tflite": True},
    # For the tests: every kind of step runs, on tiny data, in a few minutes.
    "quick": {"referring_train": 48, "referring_validation": 8, "referring_test": 16,
              "parsing_train": 16, "parsing_validation": 4, "parsing_test": 8,
              "pretrain_steps": 4, "lstm_steps": 6, "rmi_steps": 6, "parsing_steps": 4,
              "referring_seeds": 1, "parsing_seeds": 1, "figures": 1,
              "parsing_runs": ["conv_baseline", "lg_lstm"], "tflite": False},
}  # fmt: skip
SEED = 0  # the data seed; training seeds are 0, 1, ... (one run each)
ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] ")  # "I1121 15:26:26.066 1405 train.py:602] "

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    flags.DEFINE_enum("budget", "full", sorted(BUDGETS), "How much data and how many steps.", flag_values=flag_values)
    flags.DEFINE_string("report_dir", "reports/demo", "Where REPORT.md and the figures go.", flag_values=flag_values)
    flags.DEFINE_string("data_dir", "data", "Where the synthetic datasets are written.", flag_values=flag_values)
    flags.DEFINE_string("runs_dir", "runs/demo", "Where the training runs live.", flag_values=flag_values)
    flags.DEFINE_string(
        "export_dir", "saved_models", "Where SavedModels and TFLite models are exported.", flag_values=flag_values
    )


class Steps:
    """Runs commands, streams their output with a timestamp, and remembers them for the report."""

    def __init__(self):
        self.start = time.perf_counter()
        self.commands: list[tuple[str, str, float]] = []  # (what, command, seconds)

    def log(self, message: str) -> None:
        print(f"[demo {time.perf_counter() - self.start:7.1f}s] {message}", flush=True)

    def fresh(self, workdir: str) -> str:
        """Removes a previous demo's run in `workdir`: a leftover checkpoint would otherwise be resumed, trained on
        another backbone or for another number of steps."""
        if os.path.isdir(workdir):
            self.log(f"removing the previous run in {workdir}")
            shutil.rmtree(workdir)
        return workdir

    def run(self, what: str, arguments: list[str]) -> None:
        command = [sys.executable, *arguments]
        shown = " ".join(shlex.quote(part) for part in ["python", *arguments])
        self.log(f"{what}: {shown}")
        tic = time.perf_counter()
        environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
        )
        for line in process.stdout:
            # Progress lines only: absl's own prefix noise and TF's start-up chatter are dropped.
            if any(key in line for key in ("step ", "wrote", "examples", "overall_iou", "Wrote", "mean_iou")):
                print(f"    {ABSL_PREFIX.sub('', line.rstrip())[-160:]}", flush=True)
        if process.wait() != 0:
            raise RuntimeError(f"{what} failed (exit {process.returncode}): {shown}")
        self.commands.append((what, shown, time.perf_counter() - tic))


def referring_override(data_dir: str) -> list[str]:
    root = f"{data_dir}/synthetic_referring"
    return [f"--config.data.train_records={root}/train", f"--config.data.eval_records={root}/validation",
            f"--config.data.vocabulary={root}/vocabulary.txt"]  # fmt: skip


def parsing_override(data_dir: str) -> list[str]:
    root = f"{data_dir}/synthetic_parsing"
    return [f"--config.data.train_records={root}/train", f"--config.data.eval_records={root}/validation"]


def write_example_inputs(report_dir: pathlib.Path, count: int) -> list[tuple[pathlib.Path, str]]:
    """Test-split scenes (same seed stream as the test records) saved as PNGs, with their expressions."""
    from PIL import Image

    from tf_recurrent_seg.data import synthetic

    inputs = []
    stream = (SEED, synthetic.SPLIT_STREAMS["test"])
    for example in synthetic.referring_examples(stream, count, image_size=REFERRING_IMAGE_SIZE):
        path = report_dir / f"input_{len(inputs)}.png"
        Image.fromarray(example["image"]).save(path)
        inputs.append((path, example["expression"]))
    return inputs


def generate_data(steps: Steps, budget: dict, data: str) -> None:
    for task, size, extra in (
        ("referring", REFERRING_IMAGE_SIZE, []),
        ("parsing", PARSING_IMAGE_SIZE, ["--parsing_kind=animal"]),
    ):
        steps.run(f"generate the synthetic {task} data (train / validation / test)", [
            "-m", "data_tools.synthetic", f"--task={task}", f"--output_dir={data}/synthetic_{task}", *extra,
            f"--num_train={budget[f'{task}_train']}", f"--num_validation={budget[f'{task}_validation']}",
            f"--num_test={budget[f'{task}_test']}", f"--seed={SEED}", f"--image_size={size}"])  # fmt: skip


def train_referring(steps: Steps, budget: dict, data: str, runs: str, pretrained: str) -> dict[str, list[str]]:
    """Both heads on the frozen pretrained backbone, one run per seed; all share one feature cache."""
    workdirs = {model: [] for model in REFERRING_MODELS}
    for seed in range(budget["referring_seeds"]):
        for model in REFERRING_MODELS:
            workdir = steps.fresh(f"{runs}/{model}_seed{seed}")
            steps.run(f"train {model.upper()} (seed {seed}) on cached features", [
                "-m", "tf_recurrent_seg.cli.train", f"--config=configs/{model}_synthetic.py", f"--workdir={workdir}",
                f"--config.train.num_steps={budget[f'{model}_steps']}", f"--config.train.seed={seed}",
                f"--config.model.backbone.pretrained={pretrained}", f"--config.train.feature_cache_dir={runs}/features",
                *referring_override(data)])  # fmt: skip
            workdirs[model].append(workdir)
    return workdirs


def train_parsing(steps: Steps, budget: dict, data: str, runs: str, pretrained: str) -> dict[str, list[str]]:
    """The five Table 5 models, each fine-tuned from the same pretrained backbone for the same steps."""
    runs_to_train = [run for run in PARSING_RUNS if run[0] in budget["parsing_runs"]]
    workdirs = {name: [] for name, _, _ in runs_to_train}
    for seed in range(budget["parsing_seeds"]):
        for name, config, variants in runs_to_train:
            workdir = steps.fresh(f"{runs}/{name}_seed{seed}")
            steps.run(f"train {name} (seed {seed})", [
                "-m", "tf_recurrent_seg.cli.train", f"--config={config}" + (f":{variants}" if variants else ""),
                f"--workdir={workdir}", f"--config.train.num_steps={budget['parsing_steps']}",
                f"--config.train.seed={seed}", f"--config.model.backbone.pretrained={pretrained}",
                *parsing_override(data)])  # fmt: skip
            workdirs[name].append(workdir)
    return workdirs


def evaluate_on_test(
    steps: Steps, workdirs: dict[str, list[str]], test_records: str, referring: bool
) -> dict[str, list[dict]]:
    """Scores every run once on the test split (DenseCRF rows; shuffled expressions for referring runs)."""
    from tf_recurrent_seg.evaluation import load_results

    results = {}
    for name, runs in workdirs.items():
        for seed, workdir in enumerate(runs):
            extra = (
                ["--crf", f"--shuffle_expressions={seed}"] if referring else (["--crf"] if name == "lg_lstm" else [])
            )
            steps.run(f"evaluate {name} (seed {seed}) on the test split", [
                "-m", "tf_recurrent_seg.cli.evaluate", f"--workdir={workdir}", f"--eval_records={test_records}",
                f"--out_dir={workdir}/eval_test", *extra])  # fmt: skip
        results[name] = [load_results(f"{workdir}/eval_test") for workdir in runs]
    return results


def export_and_draw(steps: Steps, budget: dict, referring: dict, parsing: dict, report_dir: pathlib.Path) -> list[str]:
    """SavedModel + TFLite of RMI and LG-LSTM (seed 0), and the prediction figures; returns the report lines."""
    for name, workdir in (("rmi", referring["rmi"][0]), ("lg_lstm", parsing["lg_lstm"][0])):
        steps.run(f"export {name} (SavedModel{' + TFLite' if budget['tflite'] else ''})", [
            "-m", "tf_recurrent_seg.cli.export", f"--workdir={workdir}", f"--export_dir={FLAGS.export_dir}/demo_{name}"]
            + (["--tflite"] if budget["tflite"] else []))  # fmt: skip
    lines = ["## Predictions on test scenes (seed 0)", ""]
    for index, (image, expression) in enumerate(write_example_inputs(report_dir, budget["figures"])):
        for model in REFERRING_MODELS:
            steps.run(f"predict with {model.upper()} on test scene {index}", [
                "-m", "tf_recurrent_seg.cli.predict", f"--workdir={referring[model][0]}", f"--image={image}",
                f"--expression={expression}", f"--output={report_dir}/{model}_{index}.png"]
                + (["--steps"] if model == "rmi" else []))  # fmt: skip
        lines += [
            f'Test scene {index}, "{expression}": LSTM, RMI, RMI after each word (Figures 1, 5) and its mLSTM '
            "response maps (Figure 6).",
            "",
            f"![LSTM](lstm_{index}.png) ![RMI](rmi_{index}.png)",
            "",
            f"![after each word](rmi_{index}_steps.png)",
            "",
            f"![response maps](rmi_{index}_responses.png)",
            "",
        ]
    from PIL import Image

    from tf_recurrent_seg.data import synthetic

    figure = next(
        iter(synthetic.parsing_examples((SEED, synthetic.SPLIT_STREAMS["test"]), 1, image_size=PARSING_IMAGE_SIZE))
    )
    Image.fromarray(figure["image"]).save(report_dir / "parsing_input.png")
    for name in ("lg_lstm", "conv_baseline"):
        steps.run(
            f"predict with {name} on a test figure",
            [
                "-m",
                "tf_recurrent_seg.cli.predict",
                f"--workdir={parsing[name][0]}",
                f"--image={report_dir}/parsing_input.png",
                f"--output={report_dir}/parsing_{name}.png",
            ],
        )
    lines += [
        "Parsing, a test figure: LG-LSTM, then the conv baseline.",
        "",
        "![LG-LSTM](parsing_lg_lstm_legend.png) ![conv baseline](parsing_conv_baseline_legend.png)",
        "",
    ]
    return lines


def write_report(
    steps: Steps,
    budget: dict,
    report_dir: pathlib.Path,
    pretraining: dict,
    referring: dict,
    parsing: dict,
    validation: dict,
    figure_lines: list[str],
) -> list[str]:
    """REPORT.md (see `tf_recurrent_seg.demo_report`); returns its findings."""
    from tf_recurrent_seg import demo_report
    from tf_recurrent_seg.data import synthetic

    rules = demo_report.referring_rules(SEED, budget["referring_test"], REFERRING_IMAGE_SIZE)
    parsing_rule = demo_report.parsing_rules(SEED, budget["parsing_train"], budget["parsing_test"], PARSING_IMAGE_SIZE,
                                             synthetic.ANIMAL_CLASSES)  # fmt: skip
    findings = demo_report.claims_section(referring, parsing, rules, parsing_rule)
    seeds = budget["referring_seeds"]
    lines = [
        "# tf_recurrent_seg demo report",
        "",
        f"Budget `{FLAGS.budget}`, {os.cpu_count()} CPU cores, {time.perf_counter() - steps.start:.0f} s in all. "
        "Synthetic data only (`tf_recurrent_seg.data.synthetic`): referring scenes at "
        f"{REFERRING_IMAGE_SIZE}x{REFERRING_IMAGE_SIZE} "
        "whose expressions of 1-12 words each need their words to single out the target; parsing figures (a "
        f"four-legged animal: head, body, leg, tail in one coat colour) at {PARSING_IMAGE_SIZE}x{PARSING_IMAGE_SIZE}. "
        "The models are the papers' architectures scaled down for a CPU (`configs/*_synthetic.py`). As in the papers, "
        "they start from a pretrained backbone: here a small ResNet pretrained on synthetic scenes of its own, frozen "
        "for the referring heads (trained on its cached features) and fine-tuned for parsing. These are not the "
        "papers' numbers and are not comparable to them.",
        "",
        f"Splits: train ({budget['referring_train']} scenes / {budget['parsing_train']} figures), validation "
        f"({budget['referring_validation']} / {budget['parsing_validation']}) and test ({budget['referring_test']} / "
        f"{budget['parsing_test']}), each from its own seed stream of data seed {SEED}; the pretraining scenes from "
        "another. Learning rates, steps and sizes were chosen on the validation split (its curves are below); the "
        "test split is scored once, at the end of this run.",
        "",
        f"Training seeds: {', '.join(map(str, range(seeds)))} for each referring head, "
        f"{', '.join(map(str, range(budget['parsing_seeds'])))} for each parsing model. "
        "Cells give the mean ± the sample standard deviation over seeds; a claim holds only when the difference "
        "exceeds twice its standard error.",
        "",
        *findings,
        "",
        *demo_report.blind_rules_section(rules, referring, parsing, parsing_rule),
        "",
        *demo_report.pretraining_section(pretraining),
        "",
        *demo_report.referring_tables(referring),
        "",
        *demo_report.parsing_table(parsing),
        "",
        *demo_report.figures_section(report_dir, referring, parsing, validation, rules, parsing_rule),
        *figure_lines,
        "## Commands (run from the repository root, in this order)",
        "",
        "| Step | Command | Seconds |",
        "|---|---|---|",
        *(f"| {what} | `{command}` | {seconds:.0f} |" for what, command, seconds in steps.commands),
    ]
    (report_dir / "REPORT.md").write_text("\n".join(lines) + "\n")
    return [line for line in findings if line.startswith("- ")]


def main(argv):
    del argv
    budget = BUDGETS[FLAGS.budget]
    steps = Steps()
    report_dir = pathlib.Path(FLAGS.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    runs, data = FLAGS.runs_dir, FLAGS.data_dir

    generate_data(steps, budget, data)
    steps.fresh(f"{runs}/backbone")
    steps.run(
        "pretrain the backbone on synthetic scenes (stand-in for ImageNet / PASCAL)",
        [
            "-m",
            "tf_recurrent_seg.cli.pretrain",
            "--config=configs/backbone_synthetic.py",
            f"--workdir={runs}/backbone",
            f"--config.train.num_steps={budget['pretrain_steps']}",
        ]
        + (["--config.data.num_train=64", "--config.data.num_validation=8"] if FLAGS.budget == "quick" else []),
    )
    pretrained = f"keras:{runs}/backbone/backbone.keras"
    referring_runs = train_referring(steps, budget, data, runs, pretrained)
    parsing_runs = train_parsing(steps, budget, data, runs, pretrained)
    referring = evaluate_on_test(steps, referring_runs, f"{data}/synthetic_referring/test", referring=True)
    parsing = evaluate_on_test(steps, parsing_runs, f"{data}/synthetic_parsing/test", referring=False)
    figure_lines = export_and_draw(steps, budget, referring_runs, parsing_runs, report_dir)

    from tf_recurrent_seg.workdir import load_validation_log

    validation = {
        name: [load_validation_log(w) for w in workdirs]
        for name, workdirs in {**referring_runs, **parsing_runs}.items()
    }
    pretraining = json.loads(pathlib.Path(f"{runs}/backbone/metrics.json").read_text())
    findings = write_report(steps, budget, report_dir, pretraining, referring, parsing, validation, figure_lines)
    steps.log(f"wrote {report_dir / 'REPORT.md'}")
    print("\n".join(findings), flush=True)


def run():
    """Console-script entry point."""
    run_app(define_flags, main)


if __name__ == "__main__":
    run()
