"""Model builders: `build_rmi`, `build_lstm_baseline` (referring segmentation); `build_lg_lstm`,
`build_parsing_baseline`, `build_parsing_model` (object parsing)."""

from tf_recurrent_seg.models.parsing import StackPredictions, build_lg_lstm, build_parsing_baseline, build_parsing_model
from tf_recurrent_seg.models.referring import (
    ReferringSegmentationModel,
    build_lstm_baseline,
    build_lstm_baseline_head,
    build_rmi,
    build_rmi_head,
)

__all__ = [
    "ReferringSegmentationModel",
    "StackPredictions",
    "build_lg_lstm",
    "build_lstm_baseline",
    "build_lstm_baseline_head",
    "build_parsing_baseline",
    "build_parsing_model",
    "build_rmi",
    "build_rmi_head",
]
