"""Evaluates a training run on its evaluation split with the papers' metrics and prints their tables.

    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/rmi_refcoco_resnet [--crf] [--max_examples=500]
    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/rmi_refcoco_resnet --baseline=runs/lstm_refcoco_resnet

Loads the run's model (`workdir.load_model`: model.keras, else the latest checkpoint) and config, runs its
family's evaluator (`evaluate`: `evaluation.evaluate_referring` / `evaluate_parsing` with the config's keywords)
over `config.data.eval_records` (or --eval_records), writes `<out_dir>/metrics.json` and `<out_dir>/tables.md`
(default out_dir `<workdir>/eval`) and prints the tables. Referring runs report overall IoU, precision@0.5..0.9
(and mean IoU) overall and per expression length in tokens (RMI Tables 1-5); parsing runs the per-class IoU /
accuracy / precision / recall / F-1 tables (LG-LSTM Tables 1-4). --crf adds the DenseCRF-refined rows (needs
pydensecrf: the `crf` extra). --baseline points at another run (its workdir, eval directory or metrics.json)
whose rows and relative gains per length group appear in the tables.
"""

import inspect
import os

from absl import app, flags

from tf_recurrent_seg.cli.common import run_app

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_recurrent_seg import evaluation, tasks, workdir
from tf_recurrent_seg.data import from_config

_BACKBONE_PREFIX = {"resnet": "R", "deeplab": "D"}  # paper Table 1: R = ResNet weights, D = DeepLab weights
_REFERRING_NAMES = {"rmi": "RMI", "lstm": "LSTM"}


def referring_method(model_config) -> str:
    """The RMI paper's row label (Table 1) of a referring `config.model`: "R+RMI", "D+LSTM"."""
    backbone = model_config.backbone
    prefix = _BACKBONE_PREFIX.get(backbone.variant, backbone.variant)
    return f"{prefix}+{_REFERRING_NAMES[model_config.name]}"


COCNN_METHODS = {"cocnn": "Co-CNN", "lg_lstm_cocnn": "LG-LSTM"}  # LG-LSTM paper Tables 2-4 rows


def parsing_method(model_config) -> str:
    """The LG-LSTM paper's row label (Tables 2-5) of a parsing `config.model`: "LG-LSTM", "VGG16", "VGG16 extra
    conv", "LG-LSTM local 4", "LG-LSTM w/o global", "Co-CNN"."""
    if model_config.name in COCNN_METHODS:
        return COCNN_METHODS[model_config.name]
    if model_config.name == "conv_baseline":
        return "VGG16 extra conv" if model_config.extra_convs else "VGG16"
    name = "LG-LSTM"
    if model_config.neighbourhood != 8:
        name += f" local {model_config.neighbourhood}"
    if not model_config.use_global:
        name += " w/o global"
    return name


def referring_arguments(config, run_dir: str | None = None) -> dict:
    """`evaluation.evaluate_referring`'s keywords from a referring run's config: the split, the vocabulary (with
    `run_dir`, the run's copy of it, found from any working directory), the pipeline's options
    (`from_config.referring_options`), the length bins, the row label, the model and backbone names."""
    return {
        "eval_records": config.data.eval_records,
        "vocabulary": workdir.vocabulary_path(run_dir, config.data.vocabulary) if run_dir else config.data.vocabulary,
        **from_config.referring_options(config),
        "length_bins": config.data.length_bins,
        "method": referring_method(config.model),
        "model_name": config.model.name,
        "backbone": config.model.backbone.variant,
    }


def parsing_arguments(config, run_dir: str | None = None) -> dict:
    """`evaluation.evaluate_parsing`'s keywords from a parsing run's config: the split, the pipeline's options
    (`from_config.parsing_options`), the class names, the row label and the model name (`run_dir` is not read)."""
    return {
        "eval_records": config.data.eval_records,
        **from_config.parsing_options(config, training=False),
        "class_names": config.model.class_names,
        "method": parsing_method(config.model),
        "model_name": config.model.name,
    }


# A task's family (`tasks.TASKS[config.model.name].family`) -> (its evaluator, the evaluator's keywords from a run's
# config and directory).
EVALUATORS = {
    "referring": (evaluation.evaluate_referring, referring_arguments),
    "parsing": (evaluation.evaluate_parsing, parsing_arguments),
}


def evaluate(model, config, *, run_dir: str | None = None, eval_records=None, jit_compile=None, **options) -> dict:
    """Evaluates `model`, trained with `config`, on its split: the evaluator of its task's family (`EVALUATORS`), with
    the keywords the config gives it.

    Args:
        model: the run's model (`workdir.load_model`).
        config: the run's config.
        run_dir: the run's directory (a referring run's copy of its vocabulary); None: config.data.vocabulary.
        eval_records: records prefix / glob / list instead of `config.data.eval_records`.
        jit_compile: XLA-compile the forward pass; None: `config.train.jit_compile` (False when the config has none).
        **options: the evaluator's other keywords (crf, max_examples, batch_size, out_dir, baseline, log_every,
            shuffle_expressions); one the evaluator does not take is refused unless it is None.

    Returns:
        The evaluator's results (`evaluation.evaluate_referring`, `evaluation.evaluate_parsing`).
    """
    task = tasks.get_task(config)  # ValueError for a model name no task has
    evaluator, arguments = EVALUATORS[task.family]
    accepted = inspect.signature(evaluator).parameters
    for option in [option for option in options if option not in accepted]:
        if options.pop(option) is not None:
            raise ValueError(f"{option} does not apply to {task.name} models ({evaluator.__name__} takes no {option})")
    keywords = arguments(config, run_dir)
    if eval_records is not None:
        keywords["eval_records"] = eval_records
    keywords["jit_compile"] = task.jit_compile if jit_compile is None else jit_compile
    return evaluator(model, **keywords, **options)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the flags on `flag_values` (done by `run`; importing the module defines nothing)."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("workdir", None, "Training directory (config.json + model.keras or checkpoints/).", **fv)
    flags.DEFINE_bool("crf", False, "Also evaluate the DenseCRF-refined predictions (needs pydensecrf).", **fv)
    flags.DEFINE_integer(
        "max_examples", None, "Evaluate only the first N examples (default: the whole split).", lower_bound=1, **fv
    )
    flags.DEFINE_string("out_dir", None, "Where metrics.json and tables.md go (default <workdir>/eval).", **fv)
    flags.DEFINE_integer("batch_size", 8, "Evaluation batch size (does not change the numbers).", lower_bound=1, **fv)
    flags.DEFINE_string("eval_records", None, "Records prefix or glob instead of the config's data.eval_records.", **fv)
    flags.DEFINE_string("baseline", None, "Another run's workdir / eval dir / metrics.json to compare with.", **fv)
    flags.DEFINE_integer(
        "shuffle_expressions",
        None,
        "Referring: also score every image with another example's expression (a "
        "derangement drawn with this seed), the 'shuffled' row: the model's blind-to-language score.",
        **fv,
    )
    flags.mark_flag_as_required("workdir", flag_values=flag_values)


def main(argv, flag_values: flags.FlagValues = flags.FLAGS) -> dict:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    values = flag_values
    model, config = workdir.load_model(values.workdir)
    baseline = evaluation.load_results(values.baseline) if values.baseline else None
    out_dir = values.out_dir or os.path.join(values.workdir, workdir.EVAL_DIR)
    results = evaluate(
        model,
        config,
        run_dir=values.workdir,
        crf=values.crf,
        max_examples=values.max_examples,
        batch_size=values.batch_size,
        eval_records=values.eval_records,
        out_dir=out_dir,
        baseline=baseline,
        shuffle_expressions=values.shuffle_expressions,
    )
    print(evaluation.format_tables(results, baseline), flush=True)
    print(f"wrote {os.path.join(out_dir, evaluation.METRICS_FILE)} and {os.path.join(out_dir, evaluation.TABLES_FILE)}")
    return results


def run() -> None:
    """Console-script entry point."""
    run_app(define_flags, main)


if __name__ == "__main__":
    run()
