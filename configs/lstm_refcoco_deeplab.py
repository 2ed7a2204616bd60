"""LSTM baseline (language-only, paper §3.2), deeplab backbone, RefCOCO (UNC), paper sizes (§4.2).

Build the model from it:

    python -c "from tf_recurrent_seg.models.referring import build_lstm_baseline; import runpy; \
        build_lstm_baseline(runpy.run_path('configs/lstm_refcoco_deeplab.py')['get_config']())"

Any field can be overridden where the config is read with ml_collections.config_flags
(`--config=configs/lstm_refcoco_deeplab.py --config.train.learning_rate=1e-4`). The variant
`configs/lstm_refcoco_deeplab.py:smoke` shrinks every size so a CPU builds and runs it in seconds.
"""

from tf_recurrent_seg.defaults import referring_config, shrink_referring_config


def get_config(arg: str | None = None):
    config = referring_config("lstm", "deeplab")
    config.model.vocabulary_size = 12112  # vocabulary_Gref.txt, used for Google-Ref, UNC and UNC+
    if arg == "smoke":
        shrink_referring_config(config)
    elif arg:
        raise ValueError(f"unknown config variant {arg!r}; known: 'smoke'")
    return config
