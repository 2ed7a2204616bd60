"""Data: TFRecord schemas, source-image reading, synthetic scenes, tf.data pipelines and the feature cache."""
