"""LSTM baseline (language only, paper §3.2) with the deeplab backbone on RefCOCO (UNC), at paper sizes (§4.2).

Load it with ml_collections.config_flags (`--config=configs/lstm_refcoco_deeplab.py`, any field
overridable as `--config.train.learning_rate=1e-4`) and build with `build_lstm_baseline(config)`;
`configs/lstm_refcoco_deeplab.py:smoke` shrinks every size for a CPU run in seconds.
"""

from tf_recurrent_seg.defaults import apply_config_variant, referring_config


def get_config(variant: str | None = None):
    config = referring_config("lstm", "deeplab")
    config.model.vocabulary_size = 12112  # vocabulary_Gref.txt: Google-Ref, UNC, UNC+
    return apply_config_variant(config, variant)
