"""Table 5's conv baselines on Horse-Cow: "VGG16" (the DeepLab-LargeFOV base and one 1x1 prediction conv).

Build with `build_parsing_baseline(config)`. Variants, comma-separated: `extra` (Table 5 "VGG16 extra conv":
five 3x3 convs of 576 filters before the prediction), `smoke` (every size shrunk for a CPU run in seconds).
"""

from tf_recurrent_seg.defaults import apply_config_variant, parsing_config


def get_config(variants: str | None = None):
    names = [name for name in (variants or "").split(",") if name]
    config = parsing_config("conv_baseline_extra" if "extra" in names else "conv_baseline")
    for variant in names:
        if variant != "extra":
            apply_config_variant(config, variant)
    return config
