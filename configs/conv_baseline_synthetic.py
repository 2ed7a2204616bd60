"""Table 5's conv baselines on the built-in synthetic parsing figures, sized for a CPU (not a paper setting).

    python -m tf_recurrent_seg.cli.train --config=configs/conv_baseline_synthetic.py:extra \\
        --workdir=runs/conv_extra_synthetic

Variants, comma-separated: `extra` (five 3x3 convs before the prediction), `smoke`.
"""

from tf_recurrent_seg.defaults import apply_config_variant, parsing_config, use_synthetic_parsing


def get_config(variant: str | None = None):
    return apply_config_variant(use_synthetic_parsing(parsing_config("conv_baseline")), variant)
