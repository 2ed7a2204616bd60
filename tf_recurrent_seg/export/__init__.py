"""Export for serving, one module per task (as the TF Model Garden's `official/vision/serving/`):

- `common`: the signature names, image-bytes checks and decoding (pixel limit), preprocessing shared by both
  tasks (decode -> resize-and-pad -> normalise), the SavedModel -> TFLite conversion;
- `referring`: RMI / LSTM baseline: `serving_default` (image_bytes, expression), `serve_tensors`, for RMI
  `serve_word_outputs` (the per-word outputs of the page, `tf_recurrent_seg.demo.page`), the TFLite model with both
  LSTMs unrolled (`fixed_steps_referring_model`, `convert_referring_to_tflite`);
- `parsing`: LG-LSTM / conv baselines: `serving_default` (image_bytes), `serve_tensors`, `serve_class_names`,
  `convert_to_tflite`;
- `human_parsing`: Co-CNN / LG-LSTM on Co-CNN: `serving_default` (the uint8 image at the model size and the
  client's super-pixel inputs; image_bytes without super-pixels), `serve_tensors`, `serve_class_names`,
  `convert_to_tflite` (the super-pixel inputs included).

A run's export goes through its task (`tf_recurrent_seg.tasks`): `get_task(config).export_saved_model(model,
export_dir, ...)` calls the family's module with the run's config, and `signature_names()` lists what it writes.
The signatures' inputs, outputs and errors, serving with TF Serving, and the TFLite models: docs/serving.md.
"""

from tf_recurrent_seg.export import common, human_parsing, parsing, referring
from tf_recurrent_seg.export.common import (
    CLASS_NAMES_SIGNATURE,
    QUANTIZATIONS,
    SERVING_SIGNATURE,
    TENSORS_SIGNATURE,
    WORD_OUTPUTS_SIGNATURE,
)
from tf_recurrent_seg.export.parsing import convert_to_tflite
from tf_recurrent_seg.export.referring import (
    convert_referring_to_tflite,
    fixed_steps_referring_model,
    word_outputs_referring_model,
)

__all__ = [
    "CLASS_NAMES_SIGNATURE",
    "QUANTIZATIONS",
    "SERVING_SIGNATURE",
    "TENSORS_SIGNATURE",
    "WORD_OUTPUTS_SIGNATURE",
    "common",
    "convert_referring_to_tflite",
    "convert_to_tflite",
    "fixed_steps_referring_model",
    "human_parsing",
    "parsing",
    "referring",
    "word_outputs_referring_model",
]
