"""LG-LSTM on the built-in synthetic parsing figures, sized for a CPU (not a paper setting), with Table 5's ablations.

    python -m data_tools.synthetic --task parsing --output_dir data/synthetic_parsing --num_train 2000 --num_test 200
    python -m tf_recurrent_seg.cli.train --config=configs/lg_lstm_synthetic.py --workdir=runs/lg_lstm_synthetic

Variants, comma-separated: `local4`, `local2`, `no_global` (Table 5), `smoke`.
"""

from tf_recurrent_seg.defaults import apply_config_variant, parsing_config, use_synthetic_parsing


def get_config(variants: str | None = None):
    return apply_config_variant(use_synthetic_parsing(parsing_config("lg_lstm")), variants)
