"""Co-CNN on the built-in synthetic human figures (150x100, ATR's 18 classes), sized for a CPU (not a paper
setting; the values below are first guesses, not yet chosen on validation).

    python -m data_tools.synthetic --task parsing --parsing_kind human --output_dir data/synthetic_human \\
        --num_train 1200 --num_validation 120 --num_test 120
    python -m tf_recurrent_seg.cli.train --config=configs/cocnn_synthetic.py --workdir=runs/cocnn_synthetic

Trained from scratch, with the super-pixel layers and the image-label branch. Variants: `smoke` (a 24x16 input,
a few filters: a CPU run in seconds).
"""

from tf_recurrent_seg import defaults


def get_config(variant: str | None = None):
    config = defaults.human_parsing_config("cocnn")

    model = config.model
    model.first_filters = 32  # a CPU-sized network: the paper's widths / 4 and a narrower label branch
    model.filters = 48
    model.final_filters = 64
    model.label_filters = 16
    model.label_units = 128
    model.conv_init_stddev = None  # He-normal: N(0, 0.001) barely moves a deep from-scratch stack in a short run

    config.data.train_records = "data/synthetic_human/train"
    config.data.eval_records = "data/synthetic_human/validation"  # choices on validation; test once, at the end

    train = config.train
    train.batch_size = 8
    train.num_steps = 3000
    train.learning_rate = 1e-2
    train.checkpoint_every = 500
    train.log_every = 50
    train.eval_every = 500
    train.eval_examples = 60
    return defaults.apply_config_variant(config, variant)
