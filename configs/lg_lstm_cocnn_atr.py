"""LG-LSTM on Co-CNN on ATR: five LG-LSTM layers right before Co-CNN's prediction, trained from scratch at
150x100 (LG-LSTM paper §4.1; docs/cocnn.md).

    python -m data_tools.atr --data_dir /data/humanparsing --output_dir data/atr --write_extra   # once
    python -m data_tools.fashionista --mat_path /data/fashionista_v0.2.1.mat --output_dir data/fashionista
    python -m tf_recurrent_seg.cli.train --config=configs/lg_lstm_cocnn_atr.py --workdir=runs/lg_lstm_cocnn_atr
    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/lg_lstm_cocnn_atr   # ATR test
    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/lg_lstm_cocnn_atr --eval_records=data/fashionista/test

Variants, comma-separated: `more` (train on ATR's training split plus Chictopia10k, `data/atr/extra`: the
paper's "(more)" rows), `smoke` (every size shrunk for a CPU run in seconds).
"""

from tf_recurrent_seg.defaults import apply_atr_variant, human_parsing_config


def get_config(variant: str | None = None):
    return apply_atr_variant(human_parsing_config("lg_lstm_cocnn"), variant)
