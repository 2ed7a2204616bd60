"""The synthetic demo, apart from the library: the `make demo` job (`job`), its report (`report`, `figures`,
`baselines`), `make showcase` (`showcase`) and the page of `tf-recurrent-seg-app` (`page`).

`import tf_recurrent_seg` does not import this subpackage, and importing it imports none of its modules.
"""
