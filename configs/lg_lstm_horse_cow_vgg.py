"""LG-LSTM on Horse-Cow with the DeepLab-LargeFOV VGG-16 base, paper settings (§4.1), and Table 5's ablations.

Load with ml_collections.config_flags (`--config=configs/lg_lstm_horse_cow_vgg.py`, any field overridable as
`--config.model.num_layers=3`) and build with `build_lg_lstm(config)`. Variants, comma-separated:
`local4` / `local2` (4 or 2 neighbours), `no_global` (Table 5 "w/o global"), `smoke` (every size shrunk for
a CPU run in seconds), e.g. `configs/lg_lstm_horse_cow_vgg.py:local2,smoke`.
"""

from tf_recurrent_seg.defaults import apply_config_variant, parsing_config

ABLATIONS = {
    "local4": {"neighbourhood": 4},
    "local2": {"neighbourhood": 2},
    "no_global": {"use_global": False},
}


def get_config(variants: str | None = None):
    config = parsing_config("lg_lstm")
    for variant in (variants or "").split(","):
        if variant in ABLATIONS:
            config.model.update(ABLATIONS[variant])
        else:
            apply_config_variant(config, variant)
    return config
