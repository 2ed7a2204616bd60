"""benchmarks/run_all.py's reports on fake results, and benchmarks/roofline.py's FLOP counting on tiny models."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

BENCHMARKS_DIR = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    if str(BENCHMARKS_DIR) not in sys.path:  # the scripts import their shared `_common` module, as when run
        sys.path.insert(0, str(BENCHMARKS_DIR))
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_all():
    return _load("run_all")


@pytest.fixture(scope="module")
def roofline():
    return _load("roofline")


FAKE_RESULTS = {
    "lg_lstm": {
        "benchmark": "lg_lstm",
        "naive_ms": 30.0,
        "shared_gates_ms": 6.0,
        "speedup": 5.0,
        "max_abs_diff": 2e-6,
        "gather_train_speedup": 2.0,
        "model_ms": 900.0,
        "backbone_ms": 700.0,
        "lg_lstm_share": 0.22,
    },
    "mlstm": {
        "benchmark": "mlstm",
        "naive_ms": 900.0,
        "factorized_ms": 300.0,
        "speedup": 3.0,
        "max_abs_diff": 1e-5,
        "ms_3_words": 60.0,
        "ms_20_words": 300.0,
        "ratio_20_to_3_words": 5.0,
        "tf1_graph_ms": 2100.0,
        "speedup_over_tf1_graph": 7.0,
        "tf1_max_abs_diff": 2e-4,
    },
    "roofline": {
        "benchmark": "roofline",
        "matmul_gflops_per_s": 100.0,
        "rmi": {
            "gflops": 216.0,
            "ms": 2000.0,
            "achieved_gflops_per_s": 108.0,
            "fraction_of_matmul": 0.8,
            "parts": {"head": {"fraction_of_matmul": 0.7}},
        },
        "lg_lstm": {"gflops": 127.0, "ms": 1200.0, "achieved_gflops_per_s": 40.0, "fraction_of_matmul": 0.4},
    },
    "train_step": {
        "benchmark": "rmi_train_step",
        "cached_steps_per_second": 2.0,
        "full_steps_per_second": 0.2,
        "speedup_cached_over_full": 10.0,
        "demo_rmi_over_lstm": 2.9,
    },
}


def test_discover_skips_the_runner(run_all):
    names = [path.stem for path in run_all.discover()]
    assert "run_all" not in names
    assert {"mlstm", "lg_lstm", "pipeline", "train_step", "roofline"} <= set(names)


def test_last_json_object(run_all):
    assert run_all.last_json_object('noise\n{"a": 1}\n[1, 2]\n{bad json\n') == {"a": 1}
    assert run_all.last_json_object("no json here\n") is None


def test_reports_on_fake_results_with_a_failed_script(run_all, tmp_path):
    def fake_runner(path, timeout):
        assert timeout == 12
        if path.stem == "pipeline":
            return {"error": "exited with status 1", "returncode": 1, "stderr_tail": "Traceback\nValueError: boom"}
        if path.stem == "broken":
            raise RuntimeError("runner crashed")
        return FAKE_RESULTS[path.stem]

    scripts = [
        pathlib.Path(f"{name}.py") for name in ("lg_lstm", "mlstm", "pipeline", "roofline", "train_step", "broken")
    ]
    results, (json_path, markdown_path) = run_all.run_all(scripts, 12, tmp_path, runner=fake_runner, log=sys.stdout)

    document = json.loads(json_path.read_text())
    assert set(document["results"]) == {path.stem for path in scripts} == set(results)
    assert document["results"]["mlstm"] == FAKE_RESULTS["mlstm"]
    assert document["results"]["pipeline"]["error"] == "exited with status 1"
    assert "RuntimeError: runner crashed" in document["results"]["broken"]["error"]
    machine = document["machine"]
    assert machine["cpu_count"] >= 1 and machine["tensorflow"] == tf.__version__ and machine["date"]
    met = {name: [check["met"] for check in checks] for name, checks in document["targets"].items()}
    assert met == {
        "lg_lstm": [True, True, True],
        "mlstm": [False, True, True, True, False],
        "roofline": [True, False],
        "train_step": [True, True],
    }

    rows = {
        line.split("|")[1].strip(): line for line in markdown_path.read_text().splitlines() if line.startswith("| ")
    }
    assert set(rows) == {"benchmark", "lg_lstm", "mlstm", "pipeline", "roofline", "train_step", "broken"}
    assert rows["lg_lstm"].split("|")[4].strip() == "yes"
    assert "**no**: speedup 3" in rows["mlstm"] and "speedup >= 6" in rows["mlstm"]
    assert (
        "**no**: lg_lstm.fraction_of_matmul 0.4" in rows["roofline"]
        and "rmi.parts.head.fraction_of_matmul=0.7" in rows["roofline"]
    )
    assert "speedup_cached_over_full >= 3" in rows["train_step"] and rows["train_step"].split("|")[4].strip() == "yes"
    assert "**FAILED**" in rows["pipeline"] and "ValueError: boom" in rows["pipeline"]
    assert "rmi_examples_per_s >= 150" in rows["pipeline"]
    assert "**FAILED**" in rows["broken"]


def test_missing_target_value_is_not_met(run_all):
    checks = run_all.check_targets("pipeline", {"rmi_examples_per_s": 150.0})
    assert [check["met"] for check in checks] == [True, None]


def test_run_script_reports_failures(run_all, tmp_path):
    good = tmp_path / "good.py"
    good.write_text('import json\nprint("hello")\nprint(json.dumps({"x": 1}))\n')
    bad = tmp_path / "bad.py"
    bad.write_text('raise SystemExit("nope")\n')
    silent = tmp_path / "silent.py"
    silent.write_text("print('no json')\n")
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    assert run_all.run_script(good, 30) == {"x": 1}
    assert run_all.run_script(bad, 30)["returncode"] == 1 and "nope" in run_all.run_script(bad, 30)["stderr_tail"]
    assert run_all.run_script(silent, 30)["error"] == "printed no JSON object"
    assert run_all.run_script(slow, 0.5)["error"].startswith("timed out")


def test_profiler_count_of_a_conv2d_equals_the_hand_count(roofline):
    height, width, channels, filters, kernel = 9, 7, 3, 5, 3
    conv = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False)
    count = roofline.count_flops(conv, [tf.TensorSpec((1, height, width, channels))])
    hand = 2 * height * width * filters * kernel * kernel * channels  # a multiply-add per kernel tap
    assert count["flops"] == count["by_op"]["Conv2D"] == hand
    assert count["missing_shape"] == []
    model = keras.Sequential([keras.Input((height, width, channels)), conv])
    assert roofline.conv_layer_flops(model) == hand


def test_profiler_count_of_a_dense_layer_equals_the_hand_count(roofline):
    batch, inputs, units = 4, 6, 10
    dense = keras.layers.Dense(units)
    count = roofline.count_flops(dense, [tf.TensorSpec((batch, inputs))])
    assert count["by_op"] == {"MatMul": 2 * batch * inputs * units, "BiasAdd": batch * units}
    assert count["flops"] == 2 * batch * inputs * units + batch * units


def test_count_flops_refuses_a_while_loop(roofline):
    def loop(x):
        return tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, tf.matmul(y, y)), (0, x))[1]

    with pytest.raises(ValueError, match="control flow"):
        roofline.count_flops(loop, [tf.TensorSpec((4, 4))])


def test_count_flops_counts_a_cond_whose_branches_hold_no_counted_work(roofline):
    # As the RMI mLSTM's pad step: the products run before the cond, a branch only selects (Select: 0 FLOPs).
    def select_in_cond(x):
        y, flag = tf.matmul(x, x), x > 0
        return tf.cond(tf.reduce_all(flag), lambda: y, lambda: tf.where(flag, y, x))

    def no_cond(x):
        return tf.matmul(x, x)

    spec = [tf.TensorSpec((4, 4))]
    count, plain = roofline.count_flops(select_in_cond, spec), roofline.count_flops(no_cond, spec)
    assert count["by_op"]["MatMul"] == plain["flops"] == 2 * 4 * 4 * 4
    assert count["flops"] == plain["flops"] + 16  # the 16 comparisons of the flag, outside the cond
    assert count["cond_branch_ops"] > 0 and plain["cond_branch_ops"] == 0


def test_count_flops_refuses_a_cond_with_counted_work_in_a_branch(roofline):
    def matmul_in_cond(x):
        return tf.cond(tf.reduce_all(x > 0), lambda: tf.matmul(x, x), lambda: x)

    with pytest.raises(ValueError, match="both branches"):
        roofline.count_flops(matmul_in_cond, [tf.TensorSpec((4, 4))])


def test_cond_branch_ops_of_nested_conds(roofline):
    def nested(x):
        outer = tf.reduce_all(x > 0)
        inner = tf.reduce_any(x > 1)
        return tf.cond(outer, lambda: tf.cond(inner, lambda: x + 1, lambda: x) * 2, lambda: x)

    graph = roofline.frozen_graph(nested, [tf.TensorSpec((3,))])
    conditional = {op.type for op in roofline.cond_branch_ops(graph)}
    # The inner cond's addition and the multiplication after its Merge both sit in the outer true branch.
    assert {"AddV2", "Mul"} <= conditional
    unconditional = {op.type for op in graph.get_operations()} - conditional
    assert {"Placeholder", "All", "Any"} <= unconditional


def test_matmul_rate_is_positive(roofline):
    assert roofline.matmul_gflops_per_s(64, repeats=2) > 0
    assert roofline.min_ms(tf.function(lambda x: x + 1), np.zeros(3, np.float32), repeats=2) >= 0


def test_pipeline_benchmark_runs_the_package_stages_it_times():
    """`benchmarks/pipeline.py` calls the pipeline's private stages one by one: a change of their arguments must
    fail here, not first in `make bench` (it did once, when the parsing stage gained Co-CNN's arguments)."""
    script = BENCHMARKS_DIR / "pipeline.py"
    run = subprocess.run(
        [sys.executable, str(script), "--examples", "8", "--records", "8"], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["rmi_examples_per_s"] > 0 and result["parsing_examples_per_s"] > 0
