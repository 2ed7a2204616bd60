"""RMI on the built-in synthetic referring data, sized for a CPU (not a paper setting).

    python -m data_tools.synthetic --task referring --output_dir data/synthetic_referring --image_size 128 \\
        --num_train 9000 --num_test 600
    python -m tf_recurrent_seg.cli.pretrain --config=configs/backbone_synthetic.py --workdir=runs/backbone_synthetic
    python -m tf_recurrent_seg.cli.train --config=configs/rmi_synthetic.py --workdir=runs/rmi_synthetic
    python -m tf_recurrent_seg.cli.evaluate --workdir=runs/rmi_synthetic --eval_records=data/synthetic_referring/test

As in the paper, the head trains alone on the cached features of a frozen pretrained backbone: the small ResNet
of `configs/backbone_synthetic.py` (one unit per stage, width 8, output stride 4), whose 17 attribute logits are
the visual feature (see docs/synthetic_demo.md). `:smoke` shrinks it for tests.
"""

from tf_recurrent_seg import defaults

# Settings chosen on the validation split: docs/synthetic_demo.md#settings-chosen-on-validation


def get_config(variant: str | None = None):
    config = defaults.referring_config("rmi", "resnet")

    model = config.model
    model.vocabulary_size = 64  # >= the synthetic vocabulary (about 32 tokens with the specials)
    model.image_size = 128
    model.embedding_dim = 64  # chosen on validation
    model.language_units = 64  # chosen on validation
    # The mLSTM's per-word work on the 32x32 grid is memory-bound elementwise arithmetic on (B, 32, 32, 4u) gate
    # maps; u = 16 keeps its training step a few times the LSTM baseline's.
    model.mlstm_units = 16
    model.hidden_units = 128  # the LSTM baseline's conv1; chosen on validation
    # Targets cover about 1.5% of the map: conv2 starts at those log-odds, log(0.015 / 0.985) = -4.2, not 0.
    model.classifier_bias_init = -4.2
    # The small pretrained ResNet (configs/backbone_synthetic.py), frozen as in the papers, fc1000 included: its
    # 17 attribute logits are the visual feature, computed once and cached.
    model.backbone = defaults.synthetic_backbone_config()
    model.backbone.trainable = False
    model.backbone.train_classifier = False
    model.backbone.pretrained = "keras:runs/backbone_synthetic/backbone.keras"
    model.visual_dim = model.backbone.classifier_units

    config.data.train_records = "data/synthetic_referring/train"
    config.data.eval_records = "data/synthetic_referring/validation"  # choices on validation; test once, at the end
    config.data.vocabulary = "data/synthetic_referring/vocabulary.txt"
    config.data.length_bins = "synthetic"

    train = config.train
    train.cache_features = True
    train.feature_dtype = "float16"  # 32x32x17 attribute logits: 35 KB per scene
    train.batch_size = 16
    train.num_steps = 5000  # chosen on validation
    train.learning_rate = 1e-2  # chosen on validation
    train.end_learning_rate = 1e-4
    train.weight_decay = 0.0
    train.checkpoint_every = 1000
    train.log_every = 100
    train.eval_every = 500
    train.eval_examples = 200
    return defaults.apply_config_variant(config, variant)
