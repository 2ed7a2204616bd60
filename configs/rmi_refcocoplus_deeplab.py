"""RMI (paper §3.3) on RefCOCO+ (UNC+), deeplab backbone, paper settings (§4).

    python -m data_tools.refer --dataset refcoco+ --split_by unc \\
        --output_dir data/refcoco+_unc ...   # once; then put the vocabulary in data/.../vocabulary.txt
    python -m tf_recurrent_seg.cli.train --config=configs/rmi_refcocoplus_deeplab.py \\
        --workdir=runs/rmi_refcocoplus_deeplab
    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/rmi_refcocoplus_deeplab --crf

750k steps at batch 1 (the reference schedule); `--config.train.cache_features=True` trains the head on cached
backbone features. `configs/rmi_refcocoplus_deeplab.py:smoke` shrinks every size for a CPU run in seconds.
"""

from tf_recurrent_seg.defaults import apply_config_variant, referring_config, use_referring_dataset


def get_config(variant: str | None = None):
    config = use_referring_dataset(referring_config("rmi", "deeplab"), "refcoco+")
    return apply_config_variant(config, variant)
