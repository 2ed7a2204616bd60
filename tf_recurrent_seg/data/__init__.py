"""Data: preprocessing (and, later, TFRecord schemas and tf.data pipelines)."""
