"""Models: the referring segmenter with its RMI and LSTM-baseline heads, the LG-LSTM and conv-baseline parsing
segmenters, Co-CNN (`CoCNNSegmenter`), and the factory that builds models from a config (`build_model`)."""

from tf_recurrent_seg.models.cocnn import CoCNNSegmenter
from tf_recurrent_seg.models.factory import (
    build_backbone,
    build_lg_lstm,
    build_lstm_baseline,
    build_model,
    build_parsing_baseline,
    build_rmi,
)
from tf_recurrent_seg.models.parsing import ConvBaselineSegmenter, LGLSTMSegmenter
from tf_recurrent_seg.models.referring import LSTMBaselineHead, ReferringSegmenter, RMIHead

__all__ = [
    "CoCNNSegmenter",
    "ConvBaselineSegmenter",
    "LGLSTMSegmenter",
    "LSTMBaselineHead",
    "RMIHead",
    "ReferringSegmenter",
    "build_backbone",
    "build_lg_lstm",
    "build_lstm_baseline",
    "build_model",
    "build_parsing_baseline",
    "build_rmi",
]
