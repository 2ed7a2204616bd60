"""Dataset converters, installed with tf_recurrent_seg: `python -m data_tools.<name> --help` from any directory, or
the console scripts `tf-recurrent-seg-convert-<name>` and `tf-recurrent-seg-synthetic` (data_tools/README.md)."""
