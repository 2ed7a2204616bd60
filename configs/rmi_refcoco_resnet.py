"""RMI (paper §3.3) with the resnet backbone on RefCOCO (UNC), at paper sizes (§4.2).

Load it with ml_collections.config_flags (`--config=configs/rmi_refcoco_resnet.py`, any field
overridable as `--config.train.learning_rate=1e-4`) and build with `build_rmi(config)`;
`configs/rmi_refcoco_resnet.py:smoke` shrinks every size for a CPU run in seconds.
"""

from tf_recurrent_seg.defaults import apply_config_variant, referring_config


def get_config(variant: str | None = None):
    config = referring_config("rmi", "resnet")
    config.model.vocabulary_size = 12112  # vocabulary_Gref.txt: Google-Ref, UNC, UNC+
    return apply_config_variant(config, variant)
