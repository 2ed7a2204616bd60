"""Pretrains a backbone on synthetic scenes: `python -m tf_recurrent_seg.cli.pretrain --config=... --workdir=DIR`.

    python -m tf_recurrent_seg.cli.pretrain --config=configs/backbone_synthetic.py --workdir=runs/backbone_synthetic

Writes `<workdir>/backbone.keras` (load it with `--config.model.backbone.pretrained=keras:<workdir>/backbone.keras`)
and `<workdir>/metrics.json` (per-attribute pixel accuracy on held-out scenes); see `tf_recurrent_seg.pretraining`.
The last line on stdout is the metrics as JSON.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from tf_recurrent_seg import allocator, pretraining
from tf_recurrent_seg.cli.common import run_app


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the flags on `flag_values` (done by `run`; importing the module defines nothing)."""
    fv = {"flag_values": flag_values}
    config_flags.DEFINE_config_file(
        "config", None, "Pretraining configuration (configs/backbone_synthetic.py[:smoke]); fields overridable.", **fv
    )
    flags.DEFINE_string("workdir", None, "Where backbone.keras and metrics.json go.", **fv)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)


def main(argv, flag_values: flags.FlagValues = flags.FLAGS) -> dict:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # glibc's malloc thresholds for CPU training (tf_recurrent_seg.allocator), once the input pipeline has started.
    metrics = pretraining.pretrain(
        flag_values.config, flag_values.workdir, after_input_built=allocator.keep_large_allocations
    )
    print(json.dumps(metrics), flush=True)
    return metrics


def run() -> None:
    """Console-script entry point."""
    run_app(define_flags, main)


if __name__ == "__main__":
    run()
