"""The LSTM baseline on the built-in synthetic referring data, sized for a CPU (not a paper setting).

    python -m data_tools.synthetic --task referring --output_dir data/synthetic_referring --image_size 128 \\
        --num_train 9000 --num_test 600
    python -m tf_recurrent_seg.cli.pretrain --config=configs/backbone_synthetic.py --workdir=runs/backbone_synthetic
    python -m tf_recurrent_seg.cli.train --config=configs/lstm_synthetic.py --workdir=runs/lstm_synthetic
    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/lstm_synthetic --eval_records=data/synthetic_referring/test

As in the paper, the head trains alone on the cached features of a frozen pretrained backbone: the small ResNet
of `configs/backbone_synthetic.py` (one unit per stage, width 8, output stride 4), whose 17 attribute logits are
the visual feature (see docs/synthetic_demo.md). `:smoke` shrinks it for tests.
"""

from tf_recurrent_seg import defaults


def get_config(variant: str | None = None):
    # The setting of rmi_synthetic.py (every size, the backbone, the data, the schedule), with the LSTM head.
    config = defaults.load_config_file(__file__, "rmi_synthetic.py", variant)
    config.model.name = "lstm"
    return config
