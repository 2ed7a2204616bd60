"""The LSTM baseline (language only, paper §3.2) on RefCOCOg (Google-Ref), resnet backbone, paper settings (§4).

    python -m data_tools.refer --dataset refcocog --split_by google \\
        --output_dir data/refcocog_google ...   # once; then put the vocabulary in data/.../vocabulary.txt
    python -m tf_recurrent_seg.cli.train --config=configs/lstm_refcocog_resnet.py --workdir=runs/lstm_refcocog_resnet
    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/lstm_refcocog_resnet --crf

750k steps at batch 1 (the reference schedule); `--config.train.cache_features=True` trains the head on cached
backbone features. `configs/lstm_refcocog_resnet.py:smoke` shrinks every size for a CPU run in seconds.
"""

from tf_recurrent_seg.defaults import apply_config_variant, referring_config, use_referring_dataset


def get_config(variant: str | None = None):
    config = use_referring_dataset(referring_config("lstm", "resnet"), "refcocog")
    return apply_config_variant(config, variant)
