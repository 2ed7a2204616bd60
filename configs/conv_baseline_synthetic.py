"""Table 5's conv baselines on the built-in synthetic parsing figures, sized for a CPU (not a paper setting).

    python -m tf_recurrent_seg.cli.train --config=configs/conv_baseline_synthetic.py:extra \\
        --workdir=runs/conv_extra_synthetic

Variants, comma-separated: `extra` (five 3x3 convs before the prediction), `smoke`.
"""

from tf_recurrent_seg import defaults


def get_config(variant: str | None = None):
    # The setting of lg_lstm_synthetic.py (sizes, the backbone, the data, the schedule), with one prediction conv.
    config = defaults.load_config_file(__file__, "lg_lstm_synthetic.py", variant)
    config.model.name = "conv_baseline"
    return config
