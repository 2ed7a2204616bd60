"""Model builders: `build_rmi`, `build_lstm_baseline` (referring segmentation)."""

from tf_recurrent_seg.models.referring import (
    ReferringSegmentationModel,
    build_lstm_baseline,
    build_lstm_baseline_head,
    build_rmi,
    build_rmi_head,
)

__all__ = [
    "ReferringSegmentationModel",
    "build_lstm_baseline",
    "build_lstm_baseline_head",
    "build_rmi",
    "build_rmi_head",
]
