"""LG-LSTM on the built-in synthetic parsing figures, sized for a CPU (not a paper setting), with Table 5's ablations.

    python -m data_tools.synthetic --task parsing --parsing_kind animal --output_dir data/synthetic_parsing \\
        --image_size 97 --num_train 1200 --num_test 120
    python -m tf_recurrent_seg.cli.pretrain --config=configs/backbone_synthetic.py --workdir=runs/backbone_synthetic
    python -m tf_recurrent_seg.cli.train --config=configs/lg_lstm_synthetic.py --workdir=runs/lg_lstm_synthetic
    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/lg_lstm_synthetic --eval_records=data/synthetic_parsing/test

The backbone starts from `configs/backbone_synthetic.py`'s pretrained weights and is fine-tuned.

Variants, comma-separated: `local4`, `local2`, `no_global` (Table 5), `smoke`.
"""

from tf_recurrent_seg import defaults, image_ops

# Settings chosen on the validation split: docs/synthetic_demo.md#settings-chosen-on-validation


def get_config(variant: str | None = None):
    config = defaults.parsing_config("lg_lstm")

    model = config.model
    model.image_size = 97  # 13x13 features at output stride 8: the paper's 321 -> 41 ratio
    model.units = 16
    model.extra_conv_filters = 64
    # The small ResNet pretrained by configs/backbone_synthetic.py (the stand-in for ImageNet), its res5c features
    # at output stride 8 (an atrous network computes the strided one's features densely: the weights stay valid),
    # fine-tuned at train.pretrained_learning_rate.
    model.backbone = defaults.synthetic_backbone_config()
    model.backbone.variant = "deeplab"
    model.backbone.output_stride = 8
    model.backbone.pretrained = "keras:runs/backbone_synthetic/backbone.keras"

    config.data.train_records = "data/synthetic_parsing/train"
    config.data.eval_records = "data/synthetic_parsing/validation"  # choices on validation; test once, at the end
    config.data.normalization = image_ops.BGR_MINUS_CAFFE_RESNET_MEAN  # what the pretrained backbone saw

    train = config.train
    train.batch_size = 8
    train.num_steps = 3000  # chosen on validation
    train.learning_rate = 5e-2  # the new layers; chosen on validation
    train.pretrained_learning_rate = 1e-2  # the backbone; chosen on validation
    train.checkpoint_every = 500
    train.log_every = 50
    train.eval_every = 500
    train.eval_examples = 60
    return defaults.apply_config_variant(config, variant)
