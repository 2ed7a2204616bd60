"""`python -m tf_recurrent_seg.demo`: runs `tf_recurrent_seg.demo.job` (the `make demo` job) as the main module,
so that absl's --help shows the job's docstring and flags, as `python -m tf_recurrent_seg.demo.job` would."""

import runpy

if __name__ == "__main__":
    runpy.run_module("tf_recurrent_seg.demo.job", run_name="__main__", alter_sys=True)
