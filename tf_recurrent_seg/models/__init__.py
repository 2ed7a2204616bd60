"""Model builders: `build_rmi`, `build_lstm_baseline` (referring segmentation); `build_lg_lstm`,
`build_parsing_baseline`, `build_parsing_model` (object parsing); `build_model` for any config."""

from tf_recurrent_seg.models.parsing import StackPredictions, build_lg_lstm, build_parsing_baseline, build_parsing_model
from tf_recurrent_seg.models.referring import (
    ReferringSegmentationModel,
    build_lstm_baseline,
    build_lstm_baseline_head,
    build_rmi,
    build_rmi_head,
    model_arguments,
)

__all__ = [
    "build_model",
    "ReferringSegmentationModel",
    "StackPredictions",
    "build_lg_lstm",
    "build_lstm_baseline",
    "build_lstm_baseline_head",
    "build_parsing_baseline",
    "build_parsing_model",
    "build_rmi",
    "build_rmi_head",
    "model_arguments",
]


def build_model(config):
    """The model a config describes (referring: rmi / lstm; parsing: lg_lstm / conv_baseline)."""
    builders = {"rmi": build_rmi, "lstm": build_lstm_baseline}
    if config.model.name in builders:
        return builders[config.model.name](config)
    return build_parsing_model(config)
