"""LG-LSTM on the built-in synthetic parsing figures, sized for a CPU (not a paper setting), with Table 5's ablations.

    python -m data_tools.synthetic --task parsing --parsing_kind animal --output_dir data/synthetic_parsing \\
        --image_size 97 --num_train 1200 --num_test 120
    python -m tf_recurrent_seg.cli.pretrain --config=configs/backbone_synthetic.py --workdir=runs/backbone_synthetic
    python -m tf_recurrent_seg.cli.train --config=configs/lg_lstm_synthetic.py --workdir=runs/lg_lstm_synthetic
    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/lg_lstm_synthetic --eval_records=data/synthetic_parsing/test

The backbone starts from `configs/backbone_synthetic.py`'s pretrained weights and is fine-tuned.

Variants, comma-separated: `local4`, `local2`, `no_global` (Table 5), `smoke`.
"""

from tf_recurrent_seg.defaults import apply_config_variant, parsing_config, use_synthetic_parsing


def get_config(variant: str | None = None):
    return apply_config_variant(use_synthetic_parsing(parsing_config("lg_lstm")), variant)
