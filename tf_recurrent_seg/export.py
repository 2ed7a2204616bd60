"""Export: TFLite conversion (builtin ops only). SavedModel serving signatures come with the export issue."""

import tempfile

import keras
import tensorflow as tf


def convert_to_tflite(model: keras.Model, input_shape: tuple[int, ...], output_key: str = "logits") -> bytes:
    """Converts `model`'s `output_key` output for a fixed input shape to a TFLite flatbuffer, builtin ops only.

    The model goes through a SavedModel (`keras.export.ExportArchive`) first: converting a concrete function
    of a Keras 3 model directly leaves its weights as unfrozen resource variables (READ_VARIABLE ops that
    the interpreter cannot run), while the SavedModel path freezes them.

    Args:
        model: a Keras model taking one float32 tensor.
        input_shape: the full static input shape, batch included (e.g. (1, 321, 321, 3)).
        output_key: which entry of the model's output dict to export.

    Returns:
        The serialized TFLite model. A model that needs Flex (TF) ops raises a conversion error.

    Example:
    ```python
    content = convert_to_tflite(build_lg_lstm(config), (1, 321, 321, 3))
    interpreter = ai_edge_litert.interpreter.Interpreter(model_content=content)
    ```
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda images: model(images, training=False)[output_key],
        input_signature=[tf.TensorSpec(input_shape, tf.float32)],
    )
    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops
        return converter.convert()
