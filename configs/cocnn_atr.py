"""Co-CNN on ATR, trained from scratch at 150x100 (the LG-LSTM paper's human-parsing base, §4.1; docs/cocnn.md).

    python -m data_tools.atr --data_dir /data/humanparsing --output_dir data/atr --write_extra   # once
    python -m data_tools.fashionista --mat_path /data/fashionista_v0.2.1.mat --output_dir data/fashionista
    python -m tf_recurrent_seg.cli.train --config=configs/cocnn_atr.py --workdir=runs/cocnn_atr
    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/cocnn_atr   # ATR test
    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/cocnn_atr --eval_records=data/fashionista/test

Variants, comma-separated: `more` (train on ATR's training split plus Chictopia10k, `data/atr/extra`: the
papers' "(more)" rows), `smoke` (every size shrunk for a CPU run in seconds), e.g. `configs/cocnn_atr.py:more`.
"""

from tf_recurrent_seg.defaults import apply_atr_variant, human_parsing_config


def get_config(variant: str | None = None):
    return apply_atr_variant(human_parsing_config("cocnn"), variant)
