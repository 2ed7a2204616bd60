"""Table 5's conv baselines on Fashionista: "VGG16" (the DeepLab-LargeFOV base and one 1x1 prediction conv).

    python -m tf_recurrent_seg.cli.train --config=configs/conv_baseline_fashionista_vgg.py \\
        --workdir=runs/conv_baseline_fashionista_vgg

Variants, comma-separated: `extra` (Table 5 "VGG16 extra conv": five 3x3 convs of 576 filters before the
prediction), `smoke` (every size shrunk for a CPU run in seconds).
"""

from tf_recurrent_seg.defaults import apply_config_variant, parsing_config, use_parsing_dataset


def get_config(variant: str | None = None):
    return apply_config_variant(use_parsing_dataset(parsing_config("conv_baseline"), "fashionista"), variant)
