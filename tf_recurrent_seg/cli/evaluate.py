"""Evaluates a training run on its evaluation split with the papers' metrics and prints their tables.

    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/rmi_refcoco_resnet [--crf] [--max_examples=500]
    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/rmi_refcoco_resnet --baseline=runs/lstm_refcoco_resnet

Loads the run's model (`workdir.load_model`: model.keras, else the latest checkpoint) and config, runs
`evaluation.evaluate` over `config.data.eval_records` (or --eval_records), writes `<out_dir>/metrics.json`
and `<out_dir>/tables.md` (default out_dir `<workdir>/eval`) and prints the tables. Referring runs report
overall IoU, precision@0.5..0.9 (and mean IoU) overall and per expression length in tokens (RMI Tables
1-5); parsing runs the per-class IoU / accuracy / precision / recall / F-1 tables (LG-LSTM Tables 1-4). --crf
adds the DenseCRF-refined rows (needs pydensecrf: the `crf` extra). --baseline points at another run (its
workdir, eval directory or metrics.json) whose rows and relative gains per length group appear in the tables.
"""

import os

from absl import app, flags

from tf_recurrent_seg.cli.common import run_app

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_recurrent_seg import evaluation, workdir
from tf_recurrent_seg.defaults import is_referring


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
    if is_referring(config):  # the run's copy of its vocabulary, found from any working directory
        config.data.vocabulary = workdir.vocabulary_path(values.workdir, config)
    baseline = evaluation.load_results(values.baseline) if values.baseline else None
    out_dir = values.out_dir or os.path.join(values.workdir, workdir.EVAL_DIR)
    results = evaluation.evaluate(
        model,
        config,
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
