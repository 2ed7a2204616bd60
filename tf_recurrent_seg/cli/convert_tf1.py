"""Imports a checkpoint of the authors' TF1 code (TF-phrasecut-public RMI_model / LSTM_model) into a Keras model.

    python -m tf_recurrent_seg.cli.convert_tf1 --checkpoint PREFIX --model rmi|lstm --backbone resnet|deeplab \
        --vocabulary FILE --output OUT.keras [--head_only] [--preset_dir DIR]

Builds the paper-size model with the reference's conventions (`import_model`) for the vocabulary's size, loads
the checkpoint into it (`convert_tf1.convert_checkpoint`), logs the checkpoint entries it did not use and saves
the model (and, with --preset_dir, a preset of it: `tf_recurrent_seg.load_preset`). Variable names, shapes and
conventions: docs/tf1_checkpoints.md.
"""

import ml_collections
from absl import flags, logging

from tf_recurrent_seg.cli.common import run_app
from tf_recurrent_seg.convert_tf1 import BACKBONE_SCOPES, convert_checkpoint
from tf_recurrent_seg.defaults import model_names, referring_config
from tf_recurrent_seg.models.factory import build_referring_model
from tf_recurrent_seg.models.referring import ReferringSegmenter
from tf_recurrent_seg.tasks import get_task
from tf_recurrent_seg.text import Vocabulary


def import_config(model_name: str, variant: str, vocabulary_size: int) -> ml_collections.ConfigDict:
    """The paper-size config with the reference conventions an imported checkpoint needs."""
    config = referring_config(model_name, variant)
    config.model.vocabulary_size = vocabulary_size
    config.model.resize_convention = "reference"
    config.model.backbone.padding = "same"
    config.model.backbone.bn_epsilon = 1e-3
    return config


def import_model(model_name: str, variant: str, vocabulary_size: int, head_only: bool = False) -> ReferringSegmenter:
    """The model (`import_config`) a checkpoint of `model_name` ('rmi' / 'lstm') trained on `variant` ('resnet' /
    'deeplab') weights with a `vocabulary_size`-token vocabulary is imported into; without a backbone (a model of
    cached `visual_features`) with `head_only`."""
    if variant not in BACKBONE_SCOPES:
        raise ValueError(f"--backbone must be one of {sorted(BACKBONE_SCOPES)}, got {variant!r}")
    if model_name not in model_names("referring"):
        raise ValueError(f"--model must be one of {list(model_names('referring'))}, got {model_name!r}")
    config = import_config(model_name, variant, vocabulary_size)
    return build_referring_model(config, include_backbone=not head_only)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the flags on `flag_values` (done by `run`; importing the module defines nothing)."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string(
        "checkpoint", None, "TF1 checkpoint prefix, e.g. unc/tfmodel/unc_resnet_RMI_iter_750000.tfmodel", **fv
    )
    flags.DEFINE_enum("model", "rmi", list(model_names("referring")), "Which head the checkpoint holds.", **fv)
    flags.DEFINE_enum(
        "backbone", "resnet", ["resnet", "deeplab"], "Which backbone weights the checkpoint was trained with.", **fv
    )
    flags.DEFINE_string(
        "vocabulary",
        None,
        "The vocabulary file the checkpoint was trained with (vocabulary_Gref.txt or vocabulary_referit.txt).",
        **fv,
    )
    flags.DEFINE_string("output", None, "Where to write the Keras model (.keras).", **fv)
    flags.DEFINE_bool("head_only", False, "Import only the head (a model that takes cached backbone features).", **fv)
    flags.DEFINE_string("preset_dir", None, "Also write the model as a preset in this directory.", **fv)
    flags.mark_flags_as_required(["checkpoint", "vocabulary", "output"], flag_values=flag_values)


def main(argv, flag_values: flags.FlagValues = flags.FLAGS) -> ReferringSegmenter:
    del argv
    values = flag_values
    vocabulary = Vocabulary.load(values.vocabulary)
    logging.info(
        "Importing %s (%s, %s) with a %d-token vocabulary",
        values.checkpoint,
        values.model,
        values.backbone,
        len(vocabulary),
    )
    model = import_model(values.model, values.backbone, len(vocabulary), values.head_only)
    model = convert_checkpoint(values.checkpoint, model)
    for name in model.unused_checkpoint_variables:
        logging.warning("checkpoint variable not used by the model: %s", name)
    model.save(values.output)
    print(f"Wrote {values.output} ({model.count_params():,} parameters; resize convention 'reference')")
    if values.preset_dir:
        task = get_task(import_config(values.model, values.backbone, len(vocabulary)))
        print(f"Wrote preset {task.save_preset(model, values.preset_dir, vocabulary=values.vocabulary)}")
    return model


def run() -> None:
    """Console-script entry point."""
    run_app(define_flags, main)


if __name__ == "__main__":
    run()
