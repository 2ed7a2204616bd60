"""Custom Keras layers, each registered for `.keras` serialisation under the package "tf_recurrent_seg"."""

from tf_recurrent_seg.layers.head import BilinearResize, BoundedAtanh, ChannelMean, L2Normalize, TileToMap
from tf_recurrent_seg.layers.lg_lstm import GridMaxPool, LGLSTMLayer, TransitionLayer
from tf_recurrent_seg.layers.mlstm import ConvMultimodalLSTM, ConvMultimodalLSTMCell
from tf_recurrent_seg.layers.padding import LeftPadSteps, PaddingMask, TrimLeadingPadding
from tf_recurrent_seg.layers.sequence import LastStep, StackPredictions
from tf_recurrent_seg.layers.spatial import CeilModeMaxPool2D, SpatialCoordinates, spatial_coordinates
from tf_recurrent_seg.layers.superpixel import SuperpixelSmoothing, SuperpixelVoting

__all__ = [
    "BilinearResize",
    "BoundedAtanh",
    "CeilModeMaxPool2D",
    "ChannelMean",
    "ConvMultimodalLSTM",
    "ConvMultimodalLSTMCell",
    "GridMaxPool",
    "L2Normalize",
    "LastStep",
    "LGLSTMLayer",
    "LeftPadSteps",
    "PaddingMask",
    "SpatialCoordinates",
    "StackPredictions",
    "SuperpixelSmoothing",
    "SuperpixelVoting",
    "TileToMap",
    "TransitionLayer",
    "TrimLeadingPadding",
    "spatial_coordinates",
]
