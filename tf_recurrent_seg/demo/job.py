"""`make demo`: the main job on the built-in synthetic data, on a CPU, end to end.

    python -m tf_recurrent_seg.demo [--budget=default|full|quick] [--report_dir=reports/demo] [--parsing_seeds=3]

As in the papers, the models start from a pretrained backbone: the job first pretrains the small ResNet of the
synthetic configs on scenes of its own (`tf_recurrent_seg.pretraining`, the stand-in for ImageNet / PASCAL),
then trains the LSTM baseline and RMI heads on its frozen, cached features (several seeds each) and the five
Table 5 parsing models fine-tuned from it (same steps each). Everything is chosen on the validation split; the
test split is scored once, at the end, with and without DenseCRF and, for the referring models, with the
expressions shuffled across scenes. It exports SavedModels and TFLite models into `saved_models/`, draws the
papers' figures and the learning curves, and writes `reports/demo/REPORT.md` (`tf_recurrent_seg.demo.report`).
Every step runs as the command line the report quotes, so each number can be reproduced with the command
printed next to it. The report states what was measured, whatever it shows.
"""

import dataclasses
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time

from absl import flags
from PIL import Image

from tf_recurrent_seg.cli.common import run_app
from tf_recurrent_seg.data import synthetic
from tf_recurrent_seg.demo import report
from tf_recurrent_seg.evaluation import load_results
from tf_recurrent_seg.workdir import load_validation_log

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
# `make demo-full`: every Table 5 model, three referring seeds, TFLite; 40-45 minutes on a 2-core CPU with the install
# (two commands at a time); sizes and steps chosen on validation.
FULL_BUDGET = {
    "referring_train": 9000,
    "referring_validation": 300,
    "referring_test": 600,
    "parsing_train": 1200,
    "parsing_validation": 120,
    "parsing_test": 120,
    "pretrain_steps": 600,
    "lstm_steps": 5000,
    "rmi_steps": 5000,
    "parsing_steps": 3000,
    "referring_seeds": 3,
    "parsing_seeds": 1,
    "figures": 1,
    "parsing_runs": [name for name, _, _ in PARSING_RUNS],
    "tflite": True,
}
BUDGETS = {
    "full": FULL_BUDGET,
    # `make demo`: the full budget's data and pretraining, one seed of RMI, the LSTM baseline, LG-LSTM and the
    # one-conv baseline, each with the fewest steps that cleared its bar on validation
    # (docs/synthetic_demo.md#the-default-budget-and-the-full-one).
    "default": {
        **FULL_BUDGET,
        "rmi_steps": 4000,
        "parsing_steps": {"conv_baseline": 3000, "lg_lstm": 2000},
        "referring_seeds": 1,
        "parsing_runs": ["conv_baseline", "lg_lstm"],
        "tflite": False,
    },
    # For the tests: every kind of step runs, on tiny data, in a few minutes.
    "quick": {
        "referring_train": 48,
        "referring_validation": 8,
        "referring_test": 16,
        "parsing_train": 16,
        "parsing_validation": 4,
        "parsing_test": 8,
        "pretrain_steps": 4,
        "lstm_steps": 6,
        "rmi_steps": 6,
        "parsing_steps": 4,
        "referring_seeds": 1,
        "parsing_seeds": 1,
        "figures": 1,
        "parsing_runs": ["conv_baseline", "lg_lstm"],
        "tflite": False,
    },
}
# Measured ms per training step with one CPU thread (2-core machine): the order in which the runs start.
ONE_THREAD_MS_PER_STEP = {
    "lstm": 42,
    "rmi": 80,
    "conv_baseline": 80,
    "conv_baseline_extra": 130,
    "lg_lstm": 220,
    "lg_lstm_local2": 170,
    "lg_lstm_no_global": 210,
}
SEED = 0  # the data seed; training seeds are 0, 1, ... (one run each)
ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] ")  # "I1121 15:26:26.066 1405 train.py:602] "

FLAGS = flags.FLAGS
# The budget keys that `--referring_seeds` / `--parsing_seeds` override.
SEED_KEYS = ("referring_seeds", "parsing_seeds")


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    flags.DEFINE_enum(
        "budget",
        "default",
        sorted(BUDGETS),
        "How much data and how many steps: default (`make demo`), full (`make demo-full`), quick (the tests).",
        flag_values=flag_values,
    )
    flags.DEFINE_string("report_dir", "reports/demo", "Where REPORT.md and the figures go.", flag_values=flag_values)
    flags.DEFINE_string("data_dir", "data", "Where the synthetic datasets are written.", flag_values=flag_values)
    flags.DEFINE_string("runs_dir", "runs/demo", "Where the training runs live.", flag_values=flag_values)
    flags.DEFINE_string(
        "export_dir", "saved_models", "Where SavedModels and TFLite models are exported.", flag_values=flag_values
    )
    flags.DEFINE_integer(
        "jobs",
        0,
        "Commands run at a time (0: one per CPU core, at most 4); the cores are shared among them.",
        flag_values=flag_values,
    )
    for key in SEED_KEYS:  # one flag per budget key, named like it
        task = key.removesuffix("_seeds")
        flags.DEFINE_integer(
            key, 0, f"Training seeds per {task} model (0: the budget's).", lower_bound=0, flag_values=flag_values
        )


def budget_from_flags(flag_values: flags.FlagValues = FLAGS) -> dict:
    """The chosen budget, with the seed counts that `--referring_seeds` / `--parsing_seeds` override."""
    budget = dict(BUDGETS[flag_values.budget])
    for key in SEED_KEYS:
        budget[key] = flag_values[key].value or budget[key]
    return budget


def parsing_steps(budget: dict, run: str) -> int:
    """A parsing run's training steps: the budget's `parsing_steps`, one number for every run or one per run."""
    steps = budget["parsing_steps"]
    return steps[run] if isinstance(steps, dict) else steps


def budget_name(budget: dict, name: str) -> str:
    """How the report names the run: "`full`", or "`full` (parsing seeds 3)" when the seed counts differ."""
    changed = [f"{key.replace('_', ' ')} {budget[key]}" for key in SEED_KEYS if budget[key] != BUDGETS[name][key]]
    return f"`{name}`" + (f" ({', '.join(changed)})" if changed else "")


@dataclasses.dataclass
class Job:
    """One command of the demo: `name` (unique, shown before its output lines), `what` it does (the report's
    "Step"), its `arguments` after `python`, the `after` jobs it needs finished, and `threads` (None: the
    runner's per-job share of the cores)."""

    name: str
    what: str
    arguments: list[str]
    after: tuple[str, ...] = ()
    threads: int | None = None

    @property
    def shown(self) -> str:
        return " ".join(shlex.quote(part) for part in ["python", *self.arguments])


class Steps:
    """Runs the demo's commands, up to `parallel` at a time, streams their progress lines with a timestamp, and
    remembers them for the report.

    Most of the demo's processes are small graphs whose ops gain little from a second thread (the LSTM head's
    cached step: 21 ms on one thread, 30 ms on two), so on a 2-core machine two one-thread processes at a time
    get through the work about twice as fast as one two-thread process.
    """

    def __init__(self, parallel: int = 1):
        self.start = time.perf_counter()
        self.parallel = max(1, parallel)
        self.threads_per_job = max(1, (os.cpu_count() or 1) // self.parallel)
        self.commands: list[tuple[str, str, float]] = []  # (what, command, seconds), in start order
        self._print_lock = threading.Lock()

    def log(self, message: str) -> None:
        with self._print_lock:
            print(f"[demo {time.perf_counter() - self.start:7.1f}s] {message}", flush=True)

    def fresh(self, workdir: str) -> str:
        """Removes a previous demo's run in `workdir`: a leftover checkpoint would otherwise be resumed, trained on
        another backbone or for another number of steps."""
        if os.path.isdir(workdir):
            self.log(f"removing the previous run in {workdir}")
            shutil.rmtree(workdir)
        return workdir

    def run(self, jobs: list[Job]) -> None:
        """Runs `jobs`, each once every job in its `after` has succeeded; among the jobs ready at a time, list
        order first. The first failure stops the others and raises."""
        waiting, running, succeeded = list(jobs), {}, set()
        try:
            while waiting or running:
                for job in [job for job in waiting if set(job.after) <= succeeded]:
                    if len(running) >= self.parallel:
                        break
                    waiting.remove(job)
                    running[job.name] = self._start(job)
                if not running:
                    raise RuntimeError(f"demo jobs wait for jobs that do not exist: {[job.name for job in waiting]}")
                time.sleep(0.2)
                for name, (job, process, reader, tic) in list(running.items()):
                    if process.poll() is None:
                        continue
                    del running[name]
                    reader.join()
                    if process.returncode != 0:
                        raise RuntimeError(f"{job.what} failed (exit {process.returncode}): {job.shown}")
                    succeeded.add(name)
                    self.commands[self.commands.index((job.what, job.shown, -1.0))] = (
                        job.what,
                        job.shown,
                        time.perf_counter() - tic,
                    )
        finally:
            for _, process, _, _ in running.values():
                process.kill()

    def _start(self, job: Job) -> tuple:
        self.log(f"{job.name}: {job.what}: {job.shown}")
        # One inter-op thread: with more, ops running side by side made two pretrainings of one seed end with
        # different weights, deterministic mode or not (docs/training.md#same-seed-same-run).
        environment = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
            "TF_NUM_INTRAOP_THREADS": str(job.threads or self.threads_per_job),
            "TF_NUM_INTEROP_THREADS": "1",
        }
        process = subprocess.Popen(
            [sys.executable, *job.arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
        )
        reader = threading.Thread(target=self._stream, args=(job.name, process), daemon=True)
        reader.start()
        self.commands.append((job.what, job.shown, -1.0))  # seconds filled in when it ends
        return job, process, reader, time.perf_counter()

    def _stream(self, name: str, process: subprocess.Popen) -> None:
        for line in process.stdout:
            # Progress lines only: absl's own prefix noise and TF's start-up chatter are dropped.
            if any(key in line for key in ("step ", "wrote", "examples", "overall_iou", "Wrote", "mean_iou")):
                with self._print_lock:
                    print(f"    [{name}] {ABSL_PREFIX.sub('', line.rstrip())[-150:]}", flush=True)


def referring_override(data_dir: str) -> list[str]:
    root = f"{data_dir}/synthetic_referring"
    return [
        f"--config.data.train_records={root}/train",
        f"--config.data.eval_records={root}/validation",
        f"--config.data.vocabulary={root}/vocabulary.txt",
    ]


def parsing_override(data_dir: str) -> list[str]:
    root = f"{data_dir}/synthetic_parsing"
    return [f"--config.data.train_records={root}/train", f"--config.data.eval_records={root}/validation"]


def write_example_inputs(report_dir: pathlib.Path, count: int) -> list[tuple[pathlib.Path, str]]:
    """Test-split scenes (same seed stream as the test records) saved as PNGs, with their expressions."""
    inputs = []
    stream = (SEED, synthetic.SPLIT_STREAMS["test"])
    for example in synthetic.referring_examples(stream, count, image_size=REFERRING_IMAGE_SIZE):
        path = report_dir / f"input_{len(inputs)}.png"
        Image.fromarray(example["image"]).save(path)
        inputs.append((path, example["expression"]))
    return inputs


def data_jobs(budget: dict, data: str) -> list[Job]:
    jobs = []
    for task, size, extra in (
        ("referring", REFERRING_IMAGE_SIZE, []),
        ("parsing", PARSING_IMAGE_SIZE, ["--parsing_kind=animal"]),
    ):
        jobs.append(
            Job(
                f"data_{task}",
                f"generate the synthetic {task} data (train / validation / test)",
                [
                    "-m",
                    "data_tools.synthetic",
                    f"--task={task}",
                    f"--output_dir={data}/synthetic_{task}",
                    *extra,
                    f"--num_train={budget[f'{task}_train']}",
                    f"--num_validation={budget[f'{task}_validation']}",
                    f"--num_test={budget[f'{task}_test']}",
                    f"--seed={SEED}",
                    f"--image_size={size}",
                ],
            )
        )
    return jobs


def pretraining_job(steps: Steps, budget: dict, runs: str) -> Job:
    """Everything else waits for the backbone, so it gets every core."""
    steps.fresh(f"{runs}/backbone")
    small = ["--config.data.num_train=64", "--config.data.num_validation=8"] if FLAGS.budget == "quick" else []
    return Job(
        "pretrain",
        "pretrain the backbone on synthetic scenes (stand-in for ImageNet / PASCAL)",
        [
            "-m",
            "tf_recurrent_seg.cli.pretrain",
            "--config=configs/backbone_synthetic.py",
            f"--workdir={runs}/backbone",
            f"--config.train.num_steps={budget['pretrain_steps']}",
            *small,
        ],
        threads=os.cpu_count(),
    )


def referring_jobs(steps: Steps, budget: dict, data: str, runs: str, pretrained: str) -> dict[str, Job]:
    """Both heads on the frozen pretrained backbone, one run per seed; all share one feature cache (the first
    run to start builds it, the others wait for it)."""
    jobs = {}
    for seed in range(budget["referring_seeds"]):
        for model in REFERRING_MODELS:
            name, workdir = f"{model}_seed{seed}", steps.fresh(f"{runs}/{model}_seed{seed}")
            jobs[name] = Job(
                name,
                f"train {model.upper()} (seed {seed}) on cached features",
                [
                    "-m",
                    "tf_recurrent_seg.cli.train",
                    f"--config=configs/{model}_synthetic.py",
                    f"--workdir={workdir}",
                    f"--config.train.num_steps={budget[f'{model}_steps']}",
                    f"--config.train.seed={seed}",
                    f"--config.model.backbone.pretrained={pretrained}",
                    f"--config.train.feature_cache_dir={runs}/features",
                    *referring_override(data),
                ],
                after=("pretrain", "data_referring"),
            )
    return jobs


def parsing_jobs(steps: Steps, budget: dict, data: str, runs: str, pretrained: str) -> dict[str, Job]:
    """The five Table 5 models, each fine-tuned from the same pretrained backbone for the same steps."""
    jobs = {}
    for seed in range(budget["parsing_seeds"]):
        for name, config, variants in PARSING_RUNS:
            if name not in budget["parsing_runs"]:
                continue
            workdir = steps.fresh(f"{runs}/{name}_seed{seed}")
            jobs[f"{name}_seed{seed}"] = Job(
                f"{name}_seed{seed}",
                f"train {name} (seed {seed})",
                [
                    "-m",
                    "tf_recurrent_seg.cli.train",
                    f"--config={config}" + (f":{variants}" if variants else ""),
                    f"--workdir={workdir}",
                    f"--config.train.num_steps={parsing_steps(budget, name)}",
                    f"--config.train.seed={seed}",
                    f"--config.model.backbone.pretrained={pretrained}",
                    *parsing_override(data),
                ],
                after=("pretrain", "data_parsing"),
            )
    return jobs


def evaluation_jobs(training: dict[str, Job], test_records: str, referring: bool) -> list[Job]:
    """Scores every run once on the test split (DenseCRF rows; shuffled expressions for referring runs)."""
    jobs = []
    for name, job in training.items():
        model, seed = name.rsplit("_seed", 1)
        extra = ["--crf", f"--shuffle_expressions={seed}"] if referring else (["--crf"] if model == "lg_lstm" else [])
        jobs.append(
            Job(
                f"evaluate_{name}",
                f"evaluate {model} (seed {seed}) on the test split",
                [
                    "-m",
                    "tf_recurrent_seg.cli.evaluate",
                    f"--workdir={workdir_of(job)}",
                    f"--eval_records={test_records}",
                    f"--out_dir={workdir_of(job)}/eval_test",
                    *extra,
                ],
                after=(name,),
            )
        )
    return jobs


def workdir_of(job: Job) -> str:
    return next(part.split("=", 1)[1] for part in job.arguments if part.startswith("--workdir="))


def workdirs_by_model(training: dict[str, Job]) -> dict[str, list[str]]:
    """{model: [run directory of seed 0, 1, ...]} of the training jobs."""
    workdirs = {}
    for name, job in training.items():
        workdirs.setdefault(name.rsplit("_seed", 1)[0], []).append(workdir_of(job))
    return workdirs


def test_results(training: dict[str, Job]) -> dict[str, list[dict]]:
    """{model: [test-split results of seed 0, 1, ...]} of the training jobs' runs."""
    return {
        model: [load_results(f"{workdir}/eval_test") for workdir in workdirs]
        for model, workdirs in workdirs_by_model(training).items()
    }


def export_and_predict_jobs(budget: dict, referring: dict, parsing: dict, report_dir: pathlib.Path) -> list[Job]:
    """SavedModel + TFLite of RMI and LG-LSTM (seed 0), and the predictions drawn in the report."""
    jobs = []
    for name, runs in (("rmi", referring), ("lg_lstm", parsing)):
        jobs.append(
            Job(
                f"export_{name}",
                f"export {name} (SavedModel{' + TFLite' if budget['tflite'] else ''})",
                [
                    "-m",
                    "tf_recurrent_seg.cli.export",
                    f"--workdir={workdir_of(runs[f'{name}_seed0'])}",
                    f"--export_dir={FLAGS.export_dir}/demo_{name}",
                ]
                + (["--tflite"] if budget["tflite"] else []),
                after=(f"{name}_seed0",),
            )
        )
    for index, (image, expression) in enumerate(write_example_inputs(report_dir, budget["figures"])):
        for model in REFERRING_MODELS:
            jobs.append(
                Job(
                    f"predict_{model}_{index}",
                    f"predict with {model.upper()} on test scene {index}",
                    [
                        "-m",
                        "tf_recurrent_seg.cli.predict",
                        f"--workdir={workdir_of(referring[f'{model}_seed0'])}",
                        f"--image={image}",
                        f"--expression={expression}",
                        f"--output={report_dir}/{model}_{index}.png",
                    ]
                    + (["--steps"] if model == "rmi" else []),
                    after=(f"{model}_seed0",),
                )
            )
    write_parsing_input(report_dir)
    for name in ("lg_lstm", "conv_baseline"):
        jobs.append(
            Job(
                f"predict_{name}",
                f"predict with {name} on a test figure",
                [
                    "-m",
                    "tf_recurrent_seg.cli.predict",
                    f"--workdir={workdir_of(parsing[f'{name}_seed0'])}",
                    f"--image={report_dir}/parsing_input.png",
                    f"--output={report_dir}/parsing_{name}.png",
                ],
                after=(f"{name}_seed0",),
            )
        )
    return jobs


def write_parsing_input(report_dir: pathlib.Path) -> None:
    stream = (SEED, synthetic.SPLIT_STREAMS["test"])
    figure = next(iter(synthetic.parsing_examples(stream, 1, image_size=PARSING_IMAGE_SIZE)))
    Image.fromarray(figure["image"]).save(report_dir / "parsing_input.png")


def prediction_lines(budget: dict, report_dir: pathlib.Path) -> list[str]:
    lines = ["## Predictions on test scenes (seed 0)", ""]
    for index, (_, expression) in enumerate(write_example_inputs(report_dir, budget["figures"])):
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
    lines += [
        "Parsing, a test figure: LG-LSTM, then the conv baseline.",
        "",
        "![LG-LSTM](parsing_lg_lstm_legend.png) ![conv baseline](parsing_conv_baseline_legend.png)",
        "",
    ]
    return lines


def in_priority_order(referring: dict[str, Job], parsing: dict[str, Job], budget: dict) -> list[Job]:
    """Training jobs longest first (the last to finish decides the demo's length), except that the shortest
    referring run starts first: it builds the feature cache the other referring runs read (they wait for it), so
    that its cache and steps run beside the longest parsing run and the longer referring runs start with the cache
    ready."""

    def seconds(job: Job) -> float:
        model = job.name.rsplit("_seed", 1)[0]
        steps = parsing_steps(budget, model) if job.name in parsing else budget[f"{model}_steps"]
        return steps * ONE_THREAD_MS_PER_STEP[model] / 1000

    cache_builder = min(referring.values(), key=seconds)
    others = [job for job in [*referring.values(), *parsing.values()] if job is not cache_builder]
    return [cache_builder, *sorted(others, key=seconds, reverse=True)]  # stable: equal lengths keep seed order


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
    """REPORT.md (see `tf_recurrent_seg.demo.report`); returns its findings."""
    rules = report.referring_rules(SEED, budget["referring_test"], REFERRING_IMAGE_SIZE)
    parsing_rule = report.parsing_rules(
        SEED, budget["parsing_train"], budget["parsing_test"], PARSING_IMAGE_SIZE, synthetic.ANIMAL_CLASSES
    )
    findings = report.claims_section(referring, parsing, rules, parsing_rule)
    seeds = budget["referring_seeds"]
    training_steps = ", ".join(
        [f"{report.REFERRING_NAMES[model]} {budget[model + '_steps']}" for model in REFERRING_MODELS]
        + [f"{run} {parsing_steps(budget, run)}" for run in budget["parsing_runs"]]
    )
    lines = [
        "# tf_recurrent_seg demo report",
        "",
        f"Budget {budget_name(budget, FLAGS.budget)}, {os.cpu_count()} CPU cores, "
        f"{time.perf_counter() - steps.start:.0f} s in all. "
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
        f"Training steps: {training_steps}. "
        f"Training seeds: {', '.join(map(str, range(seeds)))} for each referring head, "
        f"{', '.join(map(str, range(budget['parsing_seeds'])))} for each parsing model. "
        "Cells give the mean ± the sample standard deviation over seeds; a claim holds only when the difference "
        "exceeds twice its standard error.",
        "",
        *findings,
        "",
        *report.blind_rules_section(rules, referring, parsing, parsing_rule),
        "",
        *report.pretraining_section(pretraining),
        "",
        *report.referring_tables(referring),
        "",
        *report.parsing_table(parsing),
        "",
        *report.figures_section(report_dir, referring, parsing, validation, rules, parsing_rule),
        *figure_lines,
        "## Commands (run from the repository root, in this order)",
        "",
        f"The demo ran up to {steps.parallel} of them at a time ({steps.threads_per_job} CPU thread(s) each, the "
        "pretraining all cores), each once the runs it reads had finished; the seconds are each command's own.",
        "",
        "| Step | Command | Seconds |",
        "|---|---|---|",
        *(f"| {what} | `{command}` | {seconds:.0f} |" for what, command, seconds in steps.commands),
    ]
    (report_dir / "REPORT.md").write_text("\n".join(lines) + "\n")
    return [line for line in findings if line.startswith("- ")]


def main(argv):
    del argv
    budget = budget_from_flags()
    steps = Steps(parallel=FLAGS.jobs or min(os.cpu_count() or 1, 4))
    report_dir = pathlib.Path(FLAGS.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    runs, data = FLAGS.runs_dir, FLAGS.data_dir
    steps.log(f"up to {steps.parallel} commands at a time, {steps.threads_per_job} CPU thread(s) each")

    pretrained = f"keras:{runs}/backbone/backbone.keras"
    referring = referring_jobs(steps, budget, data, runs, pretrained)
    parsing = parsing_jobs(steps, budget, data, runs, pretrained)
    steps.run(
        [
            pretraining_job(steps, budget, runs),
            *data_jobs(budget, data),
            *in_priority_order(referring, parsing, budget),
            *evaluation_jobs(referring, f"{data}/synthetic_referring/test", referring=True),
            *evaluation_jobs(parsing, f"{data}/synthetic_parsing/test", referring=False),
            *export_and_predict_jobs(budget, referring, parsing, report_dir),
        ]
    )

    validation = {
        name: [load_validation_log(workdir) for workdir in workdirs]
        for name, workdirs in {**workdirs_by_model(referring), **workdirs_by_model(parsing)}.items()
    }
    pretraining = json.loads(pathlib.Path(f"{runs}/backbone/metrics.json").read_text())
    results = test_results(referring), test_results(parsing)
    findings = write_report(
        steps, budget, report_dir, pretraining, *results, validation, prediction_lines(budget, report_dir)
    )
    steps.log(f"wrote {report_dir / 'REPORT.md'}")
    print("\n".join(findings), flush=True)


def run():
    """Console-script entry point."""
    run_app(define_flags, main)


if __name__ == "__main__":
    run()
