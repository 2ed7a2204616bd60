"""The configuration schema: every field of every config, each default written once, with the paper section it
comes from.

`configs/*.py` start from `referring_config`, `parsing_config` or `backbone_pretraining_config` (locked: a misspelt
field fails), set the values that distinguish them, and end with `finish(config, variant)`.
"""

import pathlib
import runpy

import ml_collections

from tf_recurrent_seg import image_ops

# Images whose header declares more pixels are refused before decoding (decompression bombs): tens of megapixels,
# far above any dataset image (COCO and ReferIt are under 1 MP; a 50-megapixel photo is 8688 x 5792).
MAX_IMAGE_PIXELS = 64_000_000


def backbone_config(variant: str = "resnet") -> ml_collections.ConfigDict:
    """ResNet-101 with atrous convolution at output stride 8 (RMI paper §4.2, reference code)."""
    config = ml_collections.ConfigDict()
    config.name = "resnet101"
    # `resnet`: fc1000 as a 1x1 conv (2048 -> 1000) in the backbone; `deeplab`: res5c (2048 channels)
    # with a new 1x1 `conv0` (2048 -> 1000) in the head.
    config.variant = variant
    config.output_stride = 8
    config.blocks_per_stage = (3, 4, 23, 3)  # ResNet-101
    config.base_width = 64  # bottleneck width of conv2_x; doubles every stage
    config.classifier_units = 1000  # fc1000 width, the visual feature D_I (§4.2)
    # TF 'SAME' padding and BN epsilon 1e-3 are the reference backbones'; keras.applications pads explicitly
    # and uses 1.001e-5 (docs/tf1_checkpoints.md#backbone-forward-pass).
    config.padding = "same"
    config.bn_epsilon = 1e-3
    config.trainable = False  # frozen, BN in inference mode, as in the reference code
    config.train_classifier = True  # resnet variant: fc1000 trains even in a frozen backbone (reference code)
    # Weights loaded when training starts: None (random), "imagenet" (keras.applications, a download; use
    # padding "explicit" and bn_epsilon 1.001e-5 with it), "imagenet:<path>" (keras.applications' weights file
    # on disk) or "tf1:<checkpoint prefix>" (the reference ResNet101_init / DeepLab ResNet101_train checkpoints,
    # the reference code's initialisation). A str placeholder: None, yet `--config.model.backbone.pretrained=...`
    # can set it (a plain None field cannot be overridden from the command line).
    config.pretrained = ml_collections.config_dict.placeholder(str)
    return config


def vgg_backbone_config() -> ml_collections.ConfigDict:
    """DeepLab-LargeFOV VGG-16, the LG-LSTM base network on Horse-Cow (LG-LSTM paper §4.1)."""
    config = ml_collections.ConfigDict()
    config.name = "vgg16_largefov"
    config.fc_units = 1024  # §4.1: fc6/fc7 narrowed from 4096 to 1024 (DeepLab-LargeFOV)
    config.fc6_dilation = 12  # §4.1: fc6 is a 3x3 conv with dilation 12 (DeepLab-LargeFOV)
    config.dropout = 0.5  # DeepLab-LargeFOV drop6/drop7, training only
    config.kernel_init_stddev = 0.001  # §4.1: every conv Gaussian, std 0.001 (conv1_1..conv5_3 then ImageNet)
    config.trainable = True  # §4.1: the base is finetuned (lr 1e-4 for pretrained layers)
    # True: keras.applications.VGG16's 2x2/2 pools and no dilation (output stride 32), to check weight
    # transfer; False: DeepLab-LargeFOV's Caffe pools (output stride 8, 321 -> 41).
    config.keras_applications_pooling = False
    # §4.1: finetuned from ImageNet (keras.applications VGG16 conv1-conv5, a download; "imagenet:<path>" reads
    # keras.applications' vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 from disk instead)
    config.pretrained = "imagenet"
    return config


def referring_data_config() -> ml_collections.ConfigDict:
    """Where a referring model's records come from (prefixes written by data_tools) and how they are read."""
    config = ml_collections.ConfigDict()
    config.train_records = "data/synthetic_referring/train"  # records prefix, glob or list of files
    config.eval_records = "data/synthetic_referring/test"
    config.vocabulary = "data/synthetic_referring/vocabulary.txt"
    # The reference ResNet/DeepLab weights' BGR mean (docs/reference_conventions.md#image-preprocessing).
    config.normalization = image_ops.REFERRING_NORMALIZATION
    config.strip_pieces = True  # tokenizer: False reproduces the reference exactly (imported checkpoints)
    config.length_bins = "refcoco"  # which paper's length break-down (Tables 2-5) evaluation reports
    # Training batches of expressions with similar token counts (the recurrences run to the batch's longest).
    config.group_by_length = True
    config.max_image_pixels = MAX_IMAGE_PIXELS  # larger images are skipped (`too_large`) without decoding
    return config


def parsing_data_config() -> ml_collections.ConfigDict:
    """Where a parsing model's records come from and how they are read and augmented."""
    config = ml_collections.ConfigDict()
    config.train_records = "data/synthetic_parsing/train"
    config.eval_records = "data/synthetic_parsing/test"
    config.left_right_pairs = ()  # label ids a horizontal flip swaps (ATR: (9, 10), (12, 13), (14, 15))
    config.normalization = image_ops.PARSING_NORMALIZATION  # keras vgg16 preprocess_input
    config.scale_range = (0.5, 1.5)  # random scale augmentation
    config.max_image_pixels = MAX_IMAGE_PIXELS  # larger images are skipped (`too_large`) without decoding
    return config


def loop_config() -> ml_collections.ConfigDict:
    """Training-loop settings shared by both tasks (not paper constants)."""
    config = ml_collections.ConfigDict()
    config.checkpoint_every = 1000  # steps; also on SIGTERM
    config.keep_checkpoints = 3
    config.log_every = 50  # progress line and TensorBoard scalars
    config.eval_every = 5000  # IoU on a validation subset
    config.eval_examples = 200
    config.seed = 0
    # Same seed, same run: deterministic kernels and input order, and a resumed run replays the input of its
    # finished steps to continue in the same order. False lets accelerators pick faster kernels and the input
    # pipeline deliver elements as they are ready (a few percent more throughput, runs differ, no replay).
    config.deterministic = True
    # Accelerators only (docs/training.md#mixed-precision-and-xla): the Keras dtype policy the model is built
    # under, "float32", "mixed_bfloat16" (TPUs, NVIDIA Ampere and later) or "mixed_float16" (older GPUs, with loss
    # scaling); the LSTM memories, the logits and the loss stay float32. On a CPU the 16-bit types are slower.
    config.mixed_precision = "float32"
    # XLA for the training step's forward and backward pass and for the evaluation forward pass.
    config.jit_compile = False
    # Referring heads only: train the head on the frozen backbone's features, computed once (exact, since it is
    # frozen). Parsing models fine-tune their backbone through the step and refuse it.
    config.cache_features = False
    return config


def model_names(family: str) -> tuple[str, ...]:
    """The `model.name`s of a family ("referring" or "parsing"), from the task registry (`tf_recurrent_seg.tasks`,
    the one list of model names)."""
    # Imported here: the task modules import this one, and configs need nothing else of the package.
    from tf_recurrent_seg import tasks

    return tasks.model_names(family)


def human_model_names() -> tuple[str, ...]:
    """The `model.name`s of the human-parsing models (Co-CNN, LG-LSTM on Co-CNN; `human_parsing_config`), from
    the task registry."""
    from tf_recurrent_seg import tasks

    return tuple(tasks.HumanParsingTask.MODELS)


def is_human_parsing(config: ml_collections.ConfigDict) -> bool:
    """Whether `config` describes a Co-CNN-based human-parsing model (`human_parsing_config`)."""
    return config.model.name in human_model_names()


def is_referring(config: ml_collections.ConfigDict) -> bool:
    """Whether `config` describes a referring segmentation model (RMI, LSTM baseline)."""
    return config.model.name in model_names("referring")


def class_names(config: ml_collections.ConfigDict) -> list[str]:
    """A parsing config's name of every class id: `model.class_names`, completed with "class <id>" where it lists
    fewer than `model.num_classes` (and cut where it lists more)."""
    names = [str(name) for name in config.model.class_names]
    count = config.model.num_classes
    return (names + [f"class {index}" for index in range(len(names), count)])[:count]


def referring_config(model: str = "rmi", variant: str = "resnet") -> ml_collections.ConfigDict:
    """Configuration of an RMI or LSTM-baseline referring segmentation model at paper size."""
    if model not in model_names("referring"):
        raise ValueError(f"model must be {' or '.join(map(repr, model_names('referring')))}, got {model!r}")
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = model
    config.model.vocabulary_size = 12112  # vocabulary_Gref.txt (Google-Ref, UNC, UNC+); ReferIt: 8803
    config.model.image_size = 320  # §4.2: W = H = 320
    config.model.max_words = 20  # §4.2: expressions truncated to 20 words
    config.model.embedding_dim = 1000  # §4.2
    config.model.embedding_init_scale = 0.08  # reference code: uniform(-0.08, 0.08)
    config.model.language_units = 1000  # §4.2: word-LSTM size
    config.model.mlstm_units = 500  # §4.2: mLSTM size (RMI)
    config.model.hidden_units = 500  # conv1 width of the LSTM baseline (reference code mlp_dim)
    config.model.visual_dim = 1000  # D_I (§4.2); the deeplab variant's conv0 output
    config.model.forget_bias = 1.0  # TF1 BasicLSTMCell constant added to the forget gate
    config.model.l2_epsilon = 1e-12  # bound on the squared norm (tf.nn.l2_normalize default)
    config.model.atanh_epsilon = 1e-3  # reference head: 0.5 * (log(1 + eps + h) - log(1 + eps - h))
    # 'half_pixel' (tf.image.resize) or 'reference' (TF1 resize_bilinear, no half-pixel centres);
    # imported TF1 checkpoints use 'reference'.
    config.model.resize_convention = "half_pixel"
    # True: run exactly max_words steps, unrolled (TFLite); False: trim leading all-pad columns.
    config.model.fixed_steps = False
    config.model.classifier_bias_init = 0.0  # conv2's initial bias (reference code: 0)
    # True: the RMI head also returns each word's low-res logits and response map (paper Figures 1, 5, 6).
    config.model.return_word_outputs = False
    config.model.backbone = backbone_config(variant)
    # The resnet variant's fc1000 output is the visual feature, so its width follows visual_dim.
    config.model.backbone.classifier_units = config.model.get_ref("visual_dim")

    config.data = referring_data_config()

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 1  # reference code
    config.train.num_steps = 750_000  # reference code
    config.train.learning_rate = 2.5e-4  # polynomial decay start (reference code)
    config.train.end_learning_rate = 1e-5
    config.train.decay_power = 0.9
    config.train.bias_learning_rate_multiplier = 2.0  # biases at twice the learning rate
    config.train.weight_decay = 5e-4  # 0.0005 * sum(w^2) / 2 over conv kernels only
    config.train.adam_beta_1 = 0.9  # TF defaults, as the reference code
    config.train.adam_beta_2 = 0.999
    config.train.adam_epsilon = 1e-8
    config.train.feature_dtype = "float32"  # of the cached features; float16 halves the disk at ~5e-4 error
    config.train.feature_cache_dir = ""  # "": <workdir>/features; runs on the same backbone and records may share one
    config.train.update(loop_config())
    config.lock()
    return config


def shrink_referring_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks every size of a referring config so a CPU builds and runs it in seconds (the `:smoke`
    variant of the configs, and the tests). The structure, conventions and step logic stay the same."""
    model = config.model
    model.vocabulary_size = 50
    model.image_size = 64
    model.embedding_dim = 16
    model.language_units = 16
    model.mlstm_units = 8
    model.hidden_units = 8
    model.visual_dim = 16
    model.backbone.classifier_units = (
        16  # the resnet variant's visual feature (tied to visual_dim in the paper configs)
    )
    model.backbone.blocks_per_stage = (1, 1, 1, 1)
    model.backbone.base_width = 8
    model.backbone.pretrained = None  # another architecture than any pretrained file
    config.train.num_steps = 20
    config.train.update({"checkpoint_every": 10, "log_every": 5, "eval_every": 10, "eval_examples": 8})
    return config


HORSE_COW_CLASSES = ("background", "head", "body", "leg", "tail")


def parsing_config(model: str = "lg_lstm") -> ml_collections.ConfigDict:
    """Configuration of an LG-LSTM or Table 5 conv-baseline parsing model, Horse-Cow setting (paper §4.1).

    `model`: "lg_lstm", "conv_baseline" (Table 5 "VGG16": one 1x1 prediction conv) or
    "conv_baseline_extra" ("VGG16 extra conv": five 3x3 convs of 576 filters first). The other Table 5
    ablations are fields: neighbourhood 4 / 2 ("local 4" / "local 2"), use_global False ("w/o global").
    """
    if model == "conv_baseline_extra":
        return apply_config_variant(parsing_config("conv_baseline"), "extra")
    # The human-parsing models share the family (metrics, export) but have their own schema.
    names = tuple(name for name in model_names("parsing") if name not in human_model_names())
    if model not in names:
        raise ValueError(f"model must be one of {(*names, 'conv_baseline_extra')}, got {model!r}")
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = model
    config.model.class_names = HORSE_COW_CLASSES
    config.model.num_classes = len(HORSE_COW_CLASSES)
    config.model.image_size = 321  # §4.1: 321x321 input, 41x41 features
    config.model.units = 64  # §4.1: d = 64 hidden cells per LSTM
    config.model.num_layers = 5  # §4.1: five LG-LSTM layers
    config.model.neighbourhood = 8  # 8 neighbours; 4 / 2 for Table 5's "local 4" / "local 2"
    config.model.use_global = True  # False: Table 5's "w/o global"
    config.model.hidden_form = (
        "grid"  # h = tanh(o * m'), eq. 1 (docs/decisions.md#lg-lstm-hidden-form); "standard": o * tanh(m')
    )
    config.model.share_lstm_weights = True  # §1: gate weights shared across LG-LSTM layers
    config.model.distinct_spatial_weights = True  # transition layer; docs/decisions.md#transition-layer-weights
    config.model.prediction_init_stddev = 0.001  # §4.1: new conv weights N(0, 0.001)
    config.model.extra_convs = 0  # 5: Table 5's "VGG16 extra conv" (the `extra` variant)
    config.model.extra_conv_filters = 576  # Table 5
    config.model.resize_convention = "half_pixel"
    config.model.backbone = vgg_backbone_config()

    config.data = parsing_data_config()

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 2  # §4.1
    config.train.learning_rate = 1e-3  # §4.1: new layers (transition, LG-LSTM, prediction convs)
    config.train.pretrained_learning_rate = 1e-4  # §4.1: the pretrained base
    config.train.momentum = 0.9
    config.train.weight_decay = 5e-4
    config.train.num_epochs = 60  # §4.1: about 60 epochs on Horse-Cow
    config.train.update(loop_config())
    config.train.num_steps = 9000  # ~60 epochs of 294 Horse-Cow training images at batch 2
    config.lock()
    return config


def shrink_parsing_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a parsing config for a CPU run in seconds: tiny ResNet backbone (trainable), small d and N."""
    model = config.model
    model.image_size = 64
    model.units = 4
    model.num_layers = 2
    model.extra_conv_filters = 8
    model.backbone = backbone_config("deeplab")
    model.backbone.blocks_per_stage = (1, 1, 1, 1)
    model.backbone.base_width = 4
    model.backbone.trainable = True
    config.train.num_epochs = 1
    config.train.num_steps = 20
    config.train.update({"checkpoint_every": 10, "log_every": 5, "eval_every": 10, "eval_examples": 8})
    return config


def human_parsing_data_config() -> ml_collections.ConfigDict:
    """`parsing_data_config` for Co-CNN on ATR: its records, flip pairs, the fitted scale, the super-pixels."""
    config = parsing_data_config()
    config.train_records = "data/atr/train"  # records prefix, glob or list of them
    config.eval_records = "data/atr/test"
    config.left_right_pairs = ATR_LEFT_RIGHT_PAIRS
    # Not stated by either paper: ATR images (~600x400) are fitted into the 150x100 input, then scaled by
    # U(scale_range) and cropped (`pipeline.augment_parsing_example`, scale_from_fit).
    config.scale_from_fit = True
    config.scale_range = (0.75, 1.25)
    # Co-CNN's super-pixels (docs/superpixels.md): ~500 per image (the paper's), SLIC in place of ERS.
    config.superpixel_segments = 500
    config.superpixel_method = "slic"
    return config


def human_parsing_config(model: str = "cocnn") -> ml_collections.ConfigDict:
    """Configuration of Co-CNN ("cocnn") or LG-LSTM on Co-CNN ("lg_lstm_cocnn") on ATR, trained from scratch at
    150x100 (LG-LSTM paper §4.1; Co-CNN: docs/cocnn.md). `model` fields are `CoCNNSegmenter`'s arguments."""
    if model not in human_model_names():
        raise ValueError(f"model must be one of {human_model_names()}, got {model!r}")
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = model
    config.model.class_names = ATR_CLASSES
    config.model.num_classes = len(ATR_CLASSES)
    # §4.1: Co-CNN's 150x100 (H x W) input
    config.model.image_height = 150
    config.model.image_width = 100
    # Co-CNN Table 1 as docs/cocnn.md reads it
    config.model.first_filters = 128
    config.model.filters = 192
    config.model.final_filters = 256
    config.model.label_filters = 96
    config.model.label_units = 1024
    config.model.label_dropout = 0.3
    config.model.use_label_branch = True  # the image-label branch (global context p)
    config.model.use_superpixels = True  # smoothing and voting after the prediction; the input becomes a dict
    config.model.max_segments = 512  # K, fixed for batching (~500 super-pixels requested)
    config.model.voting_alpha = 0.5  # the neighbours' weight in the voting (not stated: docs/cocnn.md)
    config.model.upsampling = "bilinear"
    # §4.1: five LG-LSTM layers of d = 64 right before the prediction ("LG-LSTM on Co-CNN")
    config.model.lg_lstm_layers = 5 if model == "lg_lstm_cocnn" else 0
    config.model.lg_lstm_units = 64
    config.model.share_lstm_weights = True  # §1
    # §4.1: new layers from N(0, 0.001); None: He-normal (docs/cocnn.md#initialisation)
    config.model.conv_init_stddev = ml_collections.config_dict.FieldReference(0.001, field_type=float)

    config.data = human_parsing_data_config()

    config.train = ml_collections.ConfigDict()
    # §4.1, training from scratch: SGD, every layer at one rate
    config.train.batch_size = 2
    config.train.learning_rate = 1e-3
    config.train.momentum = 0.9
    config.train.weight_decay = 5e-4
    # Weight of the label branch's squared error (at most 2 per image) against the deep-supervision loss. Not
    # tuned yet; neither paper gives one (docs/cocnn.md#training-and-the-task).
    config.train.label_loss_weight = 1.0
    config.train.num_epochs = 60  # as §4.1's Horse-Cow schedule; the paper states none for ATR
    config.train.update(loop_config())
    config.train.num_steps = 231_000  # ~60 epochs of ATR's ~7,700 training images at batch 2
    config.lock()
    return config


def add_train_records(config: ml_collections.ConfigDict, prefix: str) -> ml_collections.ConfigDict:
    """Adds the records `prefix` to `data.train_records`, which becomes a list (the papers' "(more)" rows:
    ATR's training split plus Chictopia10k, `data_tools.atr --write_extra`)."""
    current = config.data.train_records
    records = [current] if isinstance(current, str) else list(current)
    # The field holds a str: a list cannot be assigned to it (type-checked), so the field is replaced.
    with config.data.unlocked():
        del config.data["train_records"]
        config.data.train_records = [*records, prefix]
    return config


ATR_EXTRA_RECORDS = "data/atr/extra"  # Chictopia10k (`data_tools.atr --write_extra`)


def apply_atr_variant(config: ml_collections.ConfigDict, variants: str | None) -> ml_collections.ConfigDict:
    """`apply_config_variant` for the ATR configs, which know one more variant: `more` trains on ATR's training
    split plus Chictopia10k (`ATR_EXTRA_RECORDS`), the papers' "(more)" rows."""
    names = [name for name in (variants or "").split(",") if name]
    if "more" in names:
        add_train_records(config, ATR_EXTRA_RECORDS)
    return apply_config_variant(config, ",".join(name for name in names if name != "more"))


def shrink_human_parsing_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a human-parsing config for a CPU run in seconds: a 24x16 input, a few filters and super-pixels."""
    model = config.model
    model.image_height, model.image_width = 24, 16
    model.update({"first_filters": 4, "filters": 4, "final_filters": 4, "label_filters": 2, "label_units": 8})
    model.max_segments = 16
    model.lg_lstm_units = 4
    model.lg_lstm_layers = min(model.lg_lstm_layers, 2)
    model.conv_init_stddev = None  # He-normal: a visible loss change in a few steps
    config.data.superpixel_segments = 12
    config.train.num_epochs = 1
    config.train.num_steps = 4
    config.train.update({"checkpoint_every": 2, "log_every": 2, "eval_every": 4, "eval_examples": 2})
    return config


def shrink_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The smoke variant of any config of the package (locked)."""
    if config.model.name == "backbone_pretraining":
        shrink_pretraining_config(config)
    elif is_referring(config):
        shrink_referring_config(config)
    elif is_human_parsing(config):
        shrink_human_parsing_config(config)
    else:
        shrink_parsing_config(config)
    return lock(config)


CONFIG_VARIANTS = {"smoke": shrink_config}
# Table 5's ablations as `configs/<file>.py:<variant>` suffixes of the parsing configs.
MODEL_VARIANTS = {
    "local4": {"neighbourhood": 4},  # top, left, top-left, top-right
    "local2": {"neighbourhood": 2},  # top, left
    "no_global": {"use_global": False},  # "w/o global"
    "extra": {"extra_convs": 5},  # "VGG16 extra conv" (conv baselines)
}


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Locks `config` and every section in it, including sections replaced since it was first locked (a locked
    ConfigDict's own `lock()` stops at itself)."""
    return config.unlock().lock()


def apply_config_variant(config: ml_collections.ConfigDict, variants: str | None) -> ml_collections.ConfigDict:
    """Applies a `configs/<file>.py:<variants>` suffix (the one variant mechanism; every config's `get_config` ends
    with it): comma-separated names from CONFIG_VARIANTS ('smoke' shrinks every size) or MODEL_VARIANTS (the
    ablations); None or '' leaves the values as they are. The result is locked: a misspelt field fails."""
    for variant in (variants or "").split(","):
        if not variant:
            continue
        if variant in MODEL_VARIANTS:
            missing = sorted(set(MODEL_VARIANTS[variant]) - set(config.model.keys()))
            if missing:
                raise ValueError(f"config variant {variant!r} does not apply to {config.model.name!r} (no {missing})")
            config.model.update(MODEL_VARIANTS[variant])
        elif variant in CONFIG_VARIANTS:
            CONFIG_VARIANTS[variant](config)
        else:
            raise ValueError(
                f"unknown config variant {variant!r}; known: {sorted(CONFIG_VARIANTS) + sorted(MODEL_VARIANTS)}"
            )
    return lock(config)


def load_config_file(config_file: str, sibling: str, variant: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(variant)` of the config file `sibling` in `config_file`'s folder: a config that is another's
    setting with one value changed (`configs/lstm_synthetic.py`) starts from it, wherever it is run from."""
    path = pathlib.Path(config_file).resolve().with_name(sibling)
    return runpy.run_path(str(path))["get_config"](variant)


# Where `data_tools` writes each dataset (`--output_dir data/<name>`) and the facts its configs need.
REFERRING_DATASETS = {
    # vocabulary sizes: the reference code's vocabulary_Gref.txt (Google-Ref, UNC, UNC+) / vocabulary_referit.txt
    "refcoco": {"records": "data/refcoco_unc", "train": "train", "eval": "val", "vocabulary_size": 12112},
    "refcoco+": {"records": "data/refcoco+_unc", "train": "train", "eval": "val", "vocabulary_size": 12112},
    "refcocog": {"records": "data/refcocog_google", "train": "train", "eval": "val", "vocabulary_size": 12112},
    "referit": {"records": "data/referit", "train": "trainval", "eval": "test", "vocabulary_size": 8803},
}
ATR_CLASSES = (
    "background",
    "hat",
    "hair",
    "sunglass",
    "upper-clothes",
    "skirt",
    "pants",
    "dress",
    "belt",
    "left-shoe",
    "right-shoe",
    "face",
    "left-leg",
    "right-leg",
    "left-arm",
    "right-arm",
    "bag",
    "scarf",
)
LIP_CLASSES = (
    "background",
    "hat",
    "hair",
    "glove",
    "sunglasses",
    "upper-clothes",
    "dress",
    "coat",
    "socks",
    "pants",
    "jumpsuits",
    "scarf",
    "skirt",
    "face",
    "left-arm",
    "right-arm",
    "left-leg",
    "right-leg",
    "left-shoe",
    "right-shoe",
)
ATR_LEFT_RIGHT_PAIRS = ((9, 10), (12, 13), (14, 15))  # left/right shoe, leg, arm: swapped by a flip
LIP_LEFT_RIGHT_PAIRS = ((14, 15), (16, 17), (18, 19))  # left/right arm, leg, shoe
PARSING_DATASETS = {
    "horse_cow": {"records": "data/horse_cow", "eval": "test", "classes": HORSE_COW_CLASSES, "left_right_pairs": ()},
    "atr": {
        "records": "data/atr",
        "eval": "test",
        "classes": ATR_CLASSES,
        "left_right_pairs": ATR_LEFT_RIGHT_PAIRS,
    },
    "fashionista": {
        "records": "data/fashionista",
        "eval": "test",
        "classes": ATR_CLASSES,
        "left_right_pairs": ATR_LEFT_RIGHT_PAIRS,
    },
    "lip": {
        "records": "data/lip",
        "eval": "val",
        "classes": LIP_CLASSES,
        "left_right_pairs": LIP_LEFT_RIGHT_PAIRS,
    },
}


def use_referring_dataset(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """Points a referring config at a converted dataset (`data/<name>`) and sets its vocabulary size."""
    dataset = REFERRING_DATASETS[name]
    config.data.train_records = f"{dataset['records']}/{dataset['train']}"
    config.data.eval_records = f"{dataset['records']}/{dataset['eval']}"
    config.data.vocabulary = f"{dataset['records']}/vocabulary.txt"
    config.data.length_bins = name
    config.model.vocabulary_size = dataset["vocabulary_size"]
    return config


def use_parsing_dataset(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """Points a parsing config at a converted dataset (`data/<name>`) with its classes and flip pairs."""
    dataset = PARSING_DATASETS[name]
    config.data.train_records = f"{dataset['records']}/train"
    config.data.eval_records = f"{dataset['records']}/{dataset['eval']}"
    config.data.left_right_pairs = dataset["left_right_pairs"]
    config.model.class_names = dataset["classes"]
    config.model.num_classes = len(dataset["classes"])
    return config


# Per-pixel attribute classes of the synthetic pretraining (`tf_recurrent_seg.pretraining`): shape, colour and
# size, each with a background class: 7 + 7 + 3 logits. Kept here (not imported) so configs stay TF-free.
SYNTHETIC_ATTRIBUTE_CLASSES = {"shape": 7, "colour": 7, "size": 3}


def synthetic_backbone_config() -> ml_collections.ConfigDict:
    """The small ResNet of the synthetic configs, in the paper's `resnet` variant: its classifier (`fc1000`)
    gives, at every position, the pretraining's attribute logits, as ResNet-101's fc1000 gives the ImageNet
    class logits that RMI's R variant uses as visual features (RMI paper §4.2). Pretrained by
    `configs/backbone_synthetic.py`, then frozen (referring; fc1000 trains, as in the reference code) or
    fine-tuned (parsing, which reads res5c: the `deeplab` variant). Every synthetic config uses this one
    architecture so that they all load the same pretrained weights.

    Output stride 4 gives a 32x32 grid on the 128x128 referring scenes (validation targets averaged per cell,
    upsampled and thresholded keep 90.3% overall IoU; a 16x16 grid keeps 71.0%). With one unit per stage and
    dilations 1, 2, 4, 8 (OS 4), a res5c cell sees 131x131 pixels, about the whole 128x128 image from its centre.
    """
    config = backbone_config("resnet")
    config.output_stride = 4
    config.blocks_per_stage = (1, 1, 1, 1)
    config.base_width = 8  # res5c: 32 * 8 = 256 channels
    config.classifier_units = sum(SYNTHETIC_ATTRIBUTE_CLASSES.values())
    config.padding = "same"
    config.trainable = True
    return config


def backbone_pretraining_config() -> ml_collections.ConfigDict:
    """Pretraining of `synthetic_backbone_config` on per-pixel shape / colour / size
    (`tf_recurrent_seg.pretraining`)."""
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict()
    config.model.name = "backbone_pretraining"
    config.model.image_size = 128
    config.model.backbone = synthetic_backbone_config()
    config.data = ml_collections.ConfigDict()
    config.data.seed = 0  # scenes from the stream (seed, SPLIT_STREAMS["pretrain"])
    config.data.num_train = 2000
    config.data.num_validation = 200
    config.data.normalization = image_ops.BGR_MINUS_CAFFE_RESNET_MEAN
    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 16
    config.train.num_steps = 600
    config.train.learning_rate = 3e-3  # Adam, polynomial decay (power 0.9)
    config.train.end_learning_rate = 1e-4
    config.train.jit_compile = False
    config.train.deterministic = True  # same seed, same backbone (tf_recurrent_seg.determinism)
    config.train.log_every = 50
    config.train.seed = 0
    config.lock()
    return config


def shrink_pretraining_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The smoke variant of the backbone pretraining: a tiny network, a few scenes and steps."""
    config.model.image_size = 64
    config.model.backbone.base_width = 4
    config.data.num_train, config.data.num_validation = 16, 8
    config.train.update({"batch_size": 4, "num_steps": 4, "log_every": 2})
    return config
