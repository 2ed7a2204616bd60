"""Recurrent segmentation models (RMI, LG-LSTM) in TensorFlow 2 / Keras 3.

`import tf_recurrent_seg` registers every class the package saves in `.keras` files (models, layers, metrics,
learning-rate schedules) with `keras.saving`, so that `keras.saving.load_model(path)` finds them. The price is
that importing the package imports TensorFlow (a few seconds), as Keras Hub's import does.
"""

__version__ = "0.1.0"

# Every module that defines a class decorated with @keras.saving.register_keras_serializable.
from tf_recurrent_seg import backbones, layers, metrics, models, optimization  # noqa: E402,F401
from tf_recurrent_seg.presets import from_preset, load_preset  # noqa: E402,F401
