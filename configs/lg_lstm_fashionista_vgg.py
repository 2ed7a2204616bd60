"""LG-LSTM on Fashionista with the DeepLab-LargeFOV VGG-16 base (paper §4.1), and Table 5's ablations.

    python -m data_tools.fashionista --output_dir data/fashionista ...   # once
    python -m tf_recurrent_seg.cli.train --config=configs/lg_lstm_fashionista_vgg.py \\
        --workdir=runs/lg_lstm_fashionista_vgg
    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/lg_lstm_fashionista_vgg

Variants, comma-separated: `local4` / `local2` (4 or 2 neighbours), `no_global` (Table 5 "w/o global"), `smoke`
(every size shrunk for a CPU run in seconds), e.g. `configs/lg_lstm_fashionista_vgg.py:local2,smoke`.
The paper's human-parsing base is Co-CNN trained from scratch at 150x100; this config uses the DeepLab-LargeFOV
VGG-16 base at 321x321 (the Horse-Cow setting) instead.
"""

from tf_recurrent_seg.defaults import apply_config_variant, parsing_config, use_parsing_dataset


def get_config(variant: str | None = None):
    return apply_config_variant(use_parsing_dataset(parsing_config("lg_lstm"), "fashionista"), variant)
