"""RMI on the built-in synthetic referring data, sized for a CPU (not a paper setting).

    python -m data_tools.synthetic --task referring --output_dir data/synthetic_referring --num_train 4000 --num_test 500
    python -m tf_recurrent_seg.cli.train --config=configs/rmi_synthetic.py --workdir=runs/rmi_synthetic
    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/rmi_synthetic

A small ResNet (one unit per stage, width 16) trained from scratch at 128x128. `:smoke` shrinks it further.
"""

from tf_recurrent_seg.defaults import apply_config_variant, referring_config, use_synthetic_referring


def get_config(variant: str | None = None):
    return apply_config_variant(use_synthetic_referring(referring_config("rmi", "resnet")), variant)
