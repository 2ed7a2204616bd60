"""Runs every benchmark and writes reports/bench/bench.json and reports/bench/bench.md.

    python benchmarks/run_all.py [--timeout 1800] [--only mlstm,roofline] [--output_dir reports/bench] [--strict]

Runs each `benchmarks/*.py` except this file, one after another, as its own subprocess (its own
TensorFlow, no shared threads or caches), with a per-script timeout. Each prints one JSON line; the last
stdout line that parses as a JSON object is its result. A script that exits non-zero, times out or prints
no JSON is recorded as failed (with the tail of its stderr) and the others still run.

Outputs:
- `bench.json`: `{"machine": {cpu_count, tensorflow, keras, python, platform, date, git_commit, load_average},
  "results": {name: result JSON or {"error", "returncode", "stderr_tail"}}, "wall_seconds": {name: s},
  "targets": {name: [{"key", "op", "threshold", "value", "met"}]}}`;
- `bench.md`: one table row per benchmark: its key numbers, its targets (from each script's docstring,
  copied into TARGETS below) and whether they are met.
Exit status 0 even when a script fails (the table says so); `--strict` exits 1 if any script failed.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

BENCHMARKS_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
DEFAULT_OUTPUT_DIR = REPO_ROOT / "reports" / "bench"
DEFAULT_TIMEOUT_S = 1800

# name -> [(dotted key in the result, comparison, threshold)], as each script's docstring states them.
TARGETS = {
    "accelerator": [],  # its goal (LG-LSTM <= 10 ms per image at batch 1) is for a GPU: the docstring says so
    "mlstm": [
        ("speedup", ">=", 6),
        ("max_abs_diff", "<=", 1e-4),
        ("ratio_20_to_3_words", ">=", 3),
        ("speedup_over_tf1_graph", ">=", 6),
        ("tf1_max_abs_diff", "<=", 1e-4),
    ],
    "lg_lstm": [("speedup", ">=", 4), ("max_abs_diff", "<=", 1e-5), ("gather_train_speedup", ">=", 1.5)],
    "pipeline": [("rmi_examples_per_s", ">=", 150), ("parsing_examples_per_s", ">=", 150)],
    "roofline": [("rmi.parts.head.fraction_of_matmul", ">=", 0.65), ("lg_lstm.fraction_of_matmul", ">=", 0.5)],
    "train_step": [("speedup_cached_over_full", ">=", 3), ("demo_rmi_over_lstm", "<=", 3)],
}
# name -> the numbers the table shows (besides the targets' own keys); unknown scripts show their scalars.
KEY_NUMBERS = {
    "accelerator": [
        "device",
        *(
            f"{setting}.{number}"
            for setting in ("float32", "mixed", "mixed_xla")
            for number in ("rmi_full_train_examples_per_s", "rmi_cached_train_examples_per_s", "lg_lstm_latency_ms")
        ),
    ],
    "mlstm": ["tf1_graph_ms", "naive_ms", "factorized_ms", "ms_3_words", "matmul_gflops_per_s"],
    "lg_lstm": ["naive_ms", "shared_gates_ms", "model_ms", "backbone_ms", "lg_lstm_share"],
    "pipeline": ["rmi_cpu_ms_per_example", "parsing_cpu_ms_per_example"],
    "roofline": [
        "matmul_gflops_per_s",
        "rmi.gflops",
        "rmi.ms",
        "rmi.achieved_gflops_per_s",
        "lg_lstm.gflops",
        "lg_lstm.ms",
        "lg_lstm.achieved_gflops_per_s",
    ],
    "train_step": [
        "cached_steps_per_second",
        "full_steps_per_second",
        "speedup_cached_over_full",
        "demo_lstm_ms",
        "demo_rmi_ms",
        "demo_rmi_over_lstm",
        "demo_rmi_speedup_from_allocator",
    ],
}
COMPARISONS = {">=": lambda value, threshold: value >= threshold, "<=": lambda value, threshold: value <= threshold}


def discover(directory: pathlib.Path = BENCHMARKS_DIR) -> list[pathlib.Path]:
    """Every benchmark script of `directory`, sorted, except this runner (and private `_*.py` helpers)."""
    this = pathlib.Path(__file__).name
    return sorted(path for path in directory.glob("*.py") if path.name != this and not path.name.startswith("_"))


def last_json_object(stdout: str):
    """The last stdout line that parses as a JSON object, or None."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


def run_script(path: pathlib.Path, timeout: float) -> dict:
    """Runs one script; returns its JSON result, or `{"error": ..., ...}` when it fails."""
    try:
        completed = subprocess.run(
            [sys.executable, str(path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else error.stderr
        return {"error": f"timed out after {timeout:g} s", "returncode": None, "stderr_tail": _tail(stderr)}
    result = last_json_object(completed.stdout)
    if completed.returncode != 0:
        return {
            "error": f"exited with status {completed.returncode}",
            "returncode": completed.returncode,
            "stderr_tail": _tail(completed.stderr),
        }
    if result is None:
        return {"error": "printed no JSON object", "returncode": 0, "stderr_tail": _tail(completed.stderr)}
    return result


def lookup(result: dict, dotted_key: str):
    """`result["a"]["b"]` for "a.b"; None when any part is missing."""
    value = result
    for part in dotted_key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def check_targets(name: str, result: dict) -> list[dict]:
    """Each target of `name` with the measured value and whether it is met (None: value missing)."""
    checks = []
    for key, op, threshold in TARGETS.get(name, []):
        value = lookup(result, key)
        met = (
            None
            if not isinstance(value, (int, float)) or isinstance(value, bool)
            else COMPARISONS[op](value, threshold)
        )
        checks.append({"key": key, "op": op, "threshold": threshold, "value": value, "met": met})
    return checks


def machine_info() -> dict:
    def version(package):
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "tensorflow": version("tensorflow"),
        "keras": version("keras"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit,
        "load_average": [round(load, 2) for load in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def _format(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:g}"
    return str(value)


def _key_numbers(name: str, result: dict) -> list[str]:
    keys = KEY_NUMBERS.get(name)
    if keys is None:  # a script without an entry: its top-level numbers
        keys = [key for key, value in result.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
    target_keys = [key for key, _, _ in TARGETS.get(name, [])]
    keys = target_keys + [key for key in keys if key not in target_keys]
    return [f"{key}={_format(lookup(result, key))}" for key in keys if lookup(result, key) is not None]


def markdown_table(results: dict, machine: dict, wall_seconds: dict) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"{machine['date']} · {machine['cpu_count']} CPUs · TensorFlow {machine['tensorflow']} · "
        f"Keras {machine['keras']} · commit {machine['git_commit']} · load average at start {machine['load_average']}",
        "",
        "| benchmark | key numbers | targets | met | wall s |",
        "|---|---|---|---|---|",
    ]
    for name, result in results.items():
        seconds = _format(round(wall_seconds.get(name, 0.0), 1))
        if "error" in result:
            targets = (
                ", ".join(f"{key} {op} {_format(threshold)}" for key, op, threshold in TARGETS.get(name, [])) or "none"
            )
            stderr = result.get("stderr_tail", "").strip().splitlines()
            detail = f": `{stderr[-1][:160]}`" if stderr else ""
            lines.append(f"| {name} | **FAILED** ({result['error']}){detail} | {targets} | failed | {seconds} |")
            continue
        checks = check_targets(name, result)
        targets = ", ".join(f"{check['key']} {check['op']} {_format(check['threshold'])}" for check in checks) or "none"
        if not checks:
            met = "no target"
        elif all(check["met"] for check in checks):
            met = "yes"
        else:
            misses = [
                f"{check['key']} {'missing' if check['met'] is None else _format(check['value'])}"
                for check in checks
                if not check["met"]
            ]
            met = "**no**: " + ", ".join(misses)
        lines.append(f"| {name} | {', '.join(_key_numbers(name, result))} | {targets} | {met} | {seconds} |")
    lines += [
        "",
        "Timings are minima over repeats; on a shared machine absolute numbers move, ratios within one script",
        "(one process) are what the targets compare. Full results: bench.json.",
        "",
    ]
    return "\n".join(lines)


def write_reports(results: dict, wall_seconds: dict, machine: dict, output_dir) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes bench.json and bench.md into `output_dir` (created); returns their paths."""
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": machine,
        "results": results,
        "wall_seconds": {name: round(seconds, 1) for name, seconds in wall_seconds.items()},
        "targets": {name: check_targets(name, result) for name, result in results.items() if "error" not in result},
    }
    json_path, markdown_path = output_dir / "bench.json", output_dir / "bench.md"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    markdown_path.write_text(markdown_table(results, machine, wall_seconds))
    return json_path, markdown_path


def run_all(scripts, timeout: float, output_dir, runner=run_script, log=sys.stderr):
    """Runs `scripts` in order with `runner(path, timeout)`, writes the reports; returns (results, paths)."""
    machine = machine_info()
    results, wall_seconds = {}, {}
    for path in scripts:
        path = pathlib.Path(path)
        print(f"[run_all] {path.name} ...", file=log, flush=True)
        start = time.perf_counter()
        try:
            results[path.stem] = runner(path, timeout)
        except Exception as error:  # a runner failure is one failed benchmark, not the end of the run
            results[path.stem] = {"error": f"{type(error).__name__}: {error}", "returncode": None, "stderr_tail": ""}
        wall_seconds[path.stem] = time.perf_counter() - start
        status = results[path.stem].get("error", "ok")
        print(f"[run_all] {path.name}: {status} ({wall_seconds[path.stem]:.0f} s)", file=log, flush=True)
    return results, write_reports(results, wall_seconds, machine, output_dir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per script")
    parser.add_argument("--only", default="", help="comma-separated script names (without .py)")
    parser.add_argument("--output_dir", default=str(DEFAULT_OUTPUT_DIR))
    parser.add_argument("--strict", action="store_true", help="exit 1 if a script failed")
    args = parser.parse_args(argv)
    scripts = discover()
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {path.stem for path in scripts}
        if unknown:
            parser.error(f"unknown benchmarks {sorted(unknown)}; have {[path.stem for path in scripts]}")
        scripts = [path for path in scripts if path.stem in wanted]
    results, (json_path, markdown_path) = run_all(scripts, args.timeout, args.output_dir)
    print(markdown_path.read_text())
    print(f"wrote {json_path} and {markdown_path}", file=sys.stderr)
    failed = [name for name, result in results.items() if "error" in result]
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
