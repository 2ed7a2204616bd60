"""absl entry points: pretrain, train, evaluate, export, predict (`python -m tf_recurrent_seg.cli.<name>`)."""
