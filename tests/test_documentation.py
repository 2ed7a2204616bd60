"""The documentation's commands are the program's: every shell command in README.md, docs/*.md and the usage
examples of the command-line tools' docstrings names flags its program defines, config files that load, config
fields that exist and Makefile targets that exist; the commands whose whole point is a path (where the synthetic
data goes, where the SavedModel is, which image predict reads) are checked against what the code does.

Flags: the tools that define them on a `FlagValues` (`define_flags(flag_values)`, TensorFlow-free imports) are
asked; the others define them on absl's global FLAGS when imported or run, importing TensorFlow (6 s), so their
`DEFINE_*` calls are read from the source. Everything here takes about a second; `make test-large` runs the README's
quick-start chain itself on tiny data.
"""

import ast
import configparser
import copy
import dataclasses
import functools
import importlib
import importlib.util
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest
from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "data_tools" / "README.md"]
# Modules whose docstrings hold usage examples: the command-line tools and the configs.
DOCSTRING_MODULES = [
    *sorted((REPO / "tf_recurrent_seg" / "cli").glob("*.py")),
    *(REPO / "tf_recurrent_seg" / name for name in ("demo/job.py", "demo/showcase.py", "convert_tf1.py")),
    *sorted((REPO / "data_tools").glob("*.py")),
    *sorted((REPO / "configs").glob("*.py")),
]
SHELL_BLOCK = {"", "sh", "bash", "shell", "console"}  # fenced blocks tagged python / json are not commands
# A command of the package: `python`, `make`, `saved_model_cli` or a console script, after VAR=value prefixes.
COMMAND_START = re.compile(
    r"""^(?:[A-Z_]+=(?:'[^']*'|"[^"]*"|\S+)\s+)*(?:python3?|make|saved_model_cli|tf-recurrent-seg-[\w-]+)(?:\s|$)"""
)
ABSL_FLAGS = {
    "help",
    "helpfull",
    "helpshort",
    "helpxml",
    "flagfile",
    "undefok",
    "only_check_args",
    "logtostderr",
    "alsologtostderr",
    "log_dir",
    "v",
    "verbosity",
    "stderrthreshold",
    "showprefixforinfo",
}


@dataclasses.dataclass
class Command:
    where: str  # file:line
    text: str
    words: list[str]

    def flag(self, name: str) -> str | None:
        """The value of --name (last one wins, as in absl), or None."""
        value = None
        for index, word in enumerate(self.words):
            if word.startswith(f"--{name}="):
                value = word.split("=", 1)[1]
            elif word == f"--{name}" and index + 1 < len(self.words):
                value = self.words[index + 1]
        return value


# ------------------------------------------------------------------------------------------- extraction


def _logical_lines(text: str, first_line: int):
    """(line number, line) with backslash continuations joined, heredoc bodies skipped."""
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        start, line = index, lines[index]
        while line.rstrip().endswith("\\") and index + 1 < len(lines):
            index += 1
            line = line.rstrip()[:-1] + " " + lines[index].strip()
        index += 1
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", line)
        if heredoc:
            while index < len(lines) and lines[index].strip() != heredoc.group(1):
                index += 1
            index += 1
        yield first_line + start, line


def _commands_in(text: str, where: str, first_line: int) -> list[Command]:
    commands = []
    for number, line in _logical_lines(text, first_line):
        stripped = line.strip()
        if not COMMAND_START.match(stripped):  # prose, output, layout listings, other programs (docker, curl)
            continue
        try:
            words = shlex.split(stripped, comments=True)
        except ValueError as error:
            raise AssertionError(f"{where}:{number}: the command does not parse as shell ({error}): {stripped}")
        part: list[str] = []
        for word in [*words, "&&"]:  # one Command per `a && b`, `a; b`, `a | b`
            if word in ("&&", ";", "|", "||"):
                while part and re.match(r"^[A-Z_]+=", part[0]):  # VAR=value prefixes
                    part.pop(0)
                if part:
                    commands.append(Command(f"{where}:{number}", stripped, part))
                part = []
            else:
                part.append(word)
    return commands


def doc_commands(path: pathlib.Path) -> list[Command]:
    """Commands in fenced shell blocks, and inline code spans that are a whole command of the package."""
    text = path.read_text(encoding="utf-8")
    where = str(path.relative_to(REPO))
    commands = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        if match.group(1) in SHELL_BLOCK:
            first_line = text.count("\n", 0, match.start(2)) + 1
            commands += _commands_in(match.group(2), where, first_line)
    prose = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.M | re.S)
    for match in re.finditer(r"`([^`\n]+)`", prose):
        span = match.group(1)
        if re.match(r"^(python -m |python \S+\.py|tf-recurrent-seg-|make |saved_model_cli )", span) and "<" not in span:
            commands += _commands_in(span, where, text.count("\n", 0, match.start()) + 1)
    return commands


def docstring_commands(path: pathlib.Path) -> list[Command]:
    source = path.read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(source), clean=False) or ""
    first_line = source.count("\n", 0, source.find(docstring[:40])) + 1 if docstring else 1
    lines = [line for line in docstring.split("\n")]
    commands = []
    for command in _commands_in("\n".join(lines), str(path.relative_to(REPO)), first_line):
        if command.words[0] in ("python", "make", "saved_model_cli") or command.words[0].startswith(
            "tf-recurrent-seg-"
        ):
            commands.append(command)
    return commands


@functools.cache
def all_commands() -> tuple[Command, ...]:
    commands = [command for path in DOCS for command in doc_commands(path)]
    commands += [command for path in DOCSTRING_MODULES for command in docstring_commands(path)]
    return tuple(commands)


@functools.cache
def console_scripts() -> dict[str, str]:
    """setup.cfg's console scripts: name -> 'module:function'."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    scripts = {}
    for line in parser["options.entry_points"]["console_scripts"].strip().splitlines():
        name, target = (part.strip() for part in line.split("=", 1))
        scripts[name] = target
    return scripts


def _run_by_main(package: str) -> str:
    """The module the package's `__main__` runs with `runpy.run_module` (`python -m tf_recurrent_seg.demo` runs
    `tf_recurrent_seg.demo.job`), read from the source of `__main__.py`."""
    spec = importlib.util.find_spec(f"{package}.__main__")
    assert spec is not None and spec.origin, f"python -m {package}: the package has no __main__"
    run = [
        node.args[0].value
        for node in ast.walk(ast.parse(pathlib.Path(spec.origin).read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) == "runpy.run_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ]
    assert len(run) == 1, f"{package}.__main__: no runpy.run_module(<module name>, ...)"
    return run[0]


def program(command: Command) -> tuple[str | None, list[str]]:
    """(module the command runs, its arguments); module None for commands that are not the package's."""
    words = command.words
    if words[0] == "python" and len(words) > 2 and words[1] == "-m":
        spec = importlib.util.find_spec(words[2])
        if (
            spec is not None
            and spec.submodule_search_locations is not None
            and REPO in pathlib.Path(spec.origin).resolve().parents
        ):
            return _run_by_main(words[2]), words[3:]  # a package of this repository: its __main__ runs
        return words[2], words[3:]
    if words[0].startswith("tf-recurrent-seg-"):
        target = console_scripts().get(words[0])
        assert target, f"{command.where}: {words[0]} is not a console script of setup.cfg"
        return target.split(":")[0], words[1:]
    return None, []


# ------------------------------------------------------------------------------------------- flags


def _defined_in_source(path: pathlib.Path) -> set[str]:
    """Names of the flags the module's `*.DEFINE_*("name", ...)` calls define."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr.startswith("DEFINE_")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
    return names


@functools.cache
def cli_flags(module: str) -> dict[str, flags.Flag | None]:
    """The program's flags: name -> Flag (asked from its `define_flags`) or None (read from its source)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"no module {module}"
    path = pathlib.Path(spec.origin)
    source = path.read_text(encoding="utf-8")
    if re.search(r"^def define_flags\(flag_values", source, re.M):
        flag_values = flags.FlagValues()
        importlib.import_module(module).define_flags(flag_values)
        return {name: flag_values[name] for name in flag_values}
    return {name: None for name in _defined_in_source(path)}


def _flag_words(arguments: list[str]):
    """(name, value or None) of every --flag among the arguments (`[--flag]` optional syntax included)."""
    for index, word in enumerate(arguments):
        word = word.strip("[]")
        if not word.startswith("--") or word == "--":
            continue
        name, has_value, value = word[2:].partition("=")
        if not has_value and index + 1 < len(arguments) and not arguments[index + 1].startswith(("-", "[")):
            value, has_value = arguments[index + 1].strip("[]"), True
        yield name, (value if has_value else None)


def _is_placeholder(value: str | None) -> bool:
    return value is not None and ("..." in value or "<" in value or "|" in value)


# ------------------------------------------------------------------------------------------- configs


@functools.cache
def load_config(path: str, variant: str | None):
    spec = importlib.util.spec_from_file_location(f"doc_config_{pathlib.Path(path).stem}", REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant) if variant else module.get_config()


def _has_field(config, dotted: str) -> bool:
    node = config
    for key in dotted.split("."):
        if not hasattr(node, "keys") or key not in node:
            return False
        node = node[key]
    return True


# ------------------------------------------------------------------------------------------- tests


def test_the_documentation_has_commands():
    """The extraction finds the commands (a parser that found none would pass everything below)."""
    commands = all_commands()
    texts = " ".join(command.text for command in commands)
    assert len(commands) > 40, len(commands)
    for expected in (
        "make demo",
        "tf_recurrent_seg.cli.train --config=configs/rmi_synthetic.py",
        "saved_model_cli show",
        "data_tools.refer --refer_root",
        "tf_recurrent_seg.cli.predict",
        "data_tools.synthetic --task parsing",
    ):
        assert expected in texts, expected
    sources = {command.where.split(":")[0] for command in commands}
    assert {"README.md", "docs/serving.md", "tf_recurrent_seg/cli/export.py", "configs/rmi_synthetic.py"} <= sources


def test_every_flag_exists_with_a_valid_value():
    problems = []
    for command in all_commands():
        module, arguments = program(command)
        if module is None:
            continue
        if importlib.util.find_spec(module) is None:
            problems.append(f"{command.where}: no module {module}")
            continue
        defined = cli_flags(module)
        for name, value in _flag_words(arguments):
            if name.startswith("config.") and "config" in defined:
                continue  # checked against the config below
            bare = name[2:] if name.startswith("no") else None
            if name in ABSL_FLAGS or (bare in defined and value is None):
                continue
            if name not in defined:
                problems.append(f"{command.where}: {module} has no flag --{name}")
            elif defined[name] is not None and value is not None and not _is_placeholder(value) and name != "config":
                try:
                    copy.deepcopy(defined[name]).parse(value)
                except (ValueError, flags.Error) as error:
                    problems.append(f"{command.where}: --{name}={value} is refused: {error}")
    assert not problems, "\n".join(problems)


def test_every_config_loads_and_every_override_names_a_field():
    problems, checked = [], 0
    for command in all_commands():
        module, arguments = program(command)
        if module is None:
            continue
        config_file = command.flag("config")
        if config_file is None or _is_placeholder(config_file):
            continue
        path, _, variant = config_file.partition(":")
        if not (REPO / path).is_file():
            problems.append(f"{command.where}: --config={config_file}: no file {path}")
            continue
        try:
            config = load_config(path, variant or None)
        except Exception as error:  # noqa: BLE001 - any failure to load is the finding
            problems.append(f"{command.where}: --config={config_file} does not load: {error!r}")
            continue
        checked += 1
        for name, _ in _flag_words(arguments):
            if name.startswith("config.") and not _has_field(config, name[len("config.") :]):
                problems.append(f"{command.where}: --{name}: {path} has no field {name[len('config.') :]}")
    assert not problems, "\n".join(problems)
    assert checked > 10, checked


def test_every_make_target_exists():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w.-]+)\s*:(?!=)", makefile, re.M))
    used = [
        (command, word)
        for command in all_commands()
        if command.words[0] == "make"
        for word in command.words[1:]
        if "=" not in word and not word.startswith("-")
    ]
    assert used, "no make command found"
    missing = [f"{command.where}: make {word}" for command, word in used if word not in targets]
    assert not missing, "\n".join(missing)


def test_every_python_script_exists():
    scripts = [
        (command, command.words[1])
        for command in all_commands()
        if command.words[0] == "python" and len(command.words) > 1 and command.words[1].endswith(".py")
    ]
    missing = [f"{command.where}: {path}" for command, path in scripts if not (REPO / path).is_file()]
    assert not missing, "\n".join(missing)


def _default_export_dir(workdir: str) -> str:
    return os.path.join("saved_models", os.path.basename(os.path.normpath(workdir)))


def test_saved_model_cli_reads_the_version_folder():
    """The export writes `<export_dir>/<version>/` (issue 11: the README sent saved_model_cli to <export_dir>)."""
    by_file: dict[str, list[Command]] = {}
    for command in all_commands():
        by_file.setdefault(command.where.split(":")[0], []).append(command)
    checked = set()
    for where, commands in by_file.items():
        export_dirs = {
            command.flag("export_dir") or _default_export_dir(command.flag("workdir"))
            for command in commands
            if program(command)[0] == "tf_recurrent_seg.cli.export"
        }
        for command in commands:
            if command.words[0] != "saved_model_cli":
                continue
            directory = command.flag("dir")
            base, _, version = directory.rstrip("/").rpartition("/")
            assert version.isdigit() and base in export_dirs, (
                f"{command.where}: saved_model_cli --dir {directory} is not a version folder <export_dir>/<N> of "
                f"this page's export commands ({sorted(export_dirs)})"
            )
            checked.add(where)
    assert {"README.md", "docs/serving.md"} <= checked, checked


def _synthetic_data_dirs() -> dict[str, str]:
    """task -> the directory the synthetic configs read their records from."""
    referring = load_config("configs/rmi_synthetic.py", None).data
    parsing = load_config("configs/lg_lstm_synthetic.py", None).data
    for config_file in ("configs/lstm_synthetic.py", "configs/conv_baseline_synthetic.py"):
        data = load_config(config_file, None).data
        assert os.path.dirname(data.train_records) in (
            os.path.dirname(referring.train_records),
            os.path.dirname(parsing.train_records),
        )
    assert os.path.dirname(referring.vocabulary) == os.path.dirname(referring.train_records)
    human = load_config("configs/cocnn_synthetic.py", None).data  # the human figures (--parsing_kind=human)
    return {
        "referring": os.path.dirname(referring.train_records),
        "parsing": os.path.dirname(parsing.train_records),
        "human": os.path.dirname(human.train_records),
    }


def test_synthetic_data_is_written_where_the_configs_read_it():
    """Every `data_tools.synthetic` command of the docs writes the directory the synthetic configs read (issue 11:
    its --help wrote data/synthetic_animal, the configs read data/synthetic_parsing)."""
    expected = _synthetic_data_dirs()
    commands = [command for command in all_commands() if program(command)[0] == "data_tools.synthetic"]
    assert any(command.where.startswith("data_tools/synthetic.py") for command in commands)
    wrong = []
    for command in commands:
        task, output_dir = command.flag("task"), command.flag("output_dir")
        if task is None or output_dir is None:
            continue
        task = "human" if command.flag("parsing_kind") == "human" else task
        if os.path.normpath(output_dir) != expected[task]:
            wrong.append(f"{command.where}: --task={task} --output_dir={output_dir}, the configs read {expected[task]}")
    assert not wrong, "\n".join(wrong)


def test_readme_predict_image_is_made_by_the_readme(tmp_path):
    """The quick start's predict reads an image that the commands before it write: run the README's command that
    writes it (from an empty directory) and check that it prints the expression the predict command uses."""
    commands = [command for command in all_commands() if command.where.startswith("README.md")]
    (predict,) = [command for command in commands if program(command)[0] == "tf_recurrent_seg.cli.predict"]
    image = predict.flag("image")
    writers = [command for command in commands if command.words[:2] == ["python", "-c"] and image in command.words[2]]
    assert writers, f"README.md: nothing writes {image}, the image {predict.where} reads"
    assert int(writers[0].where.split(":")[1]) < int(predict.where.split(":")[1])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, *writers[0].words[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / image).is_file()
    assert result.stdout.strip() == predict.flag("expression")


def test_converters_are_installed_with_console_scripts(tmp_path):
    """data_tools is a package of the distribution, each converter has a console script named like the others,
    and (once installed) runs from any directory."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    included = [name.strip() for name in parser["options.packages.find"]["include"].split(",")]
    assert "data_tools" in included
    scripts = console_scripts()
    assert all(name.startswith("tf-recurrent-seg-") for name in scripts)
    tools = sorted(
        path.stem
        for path in (REPO / "data_tools").glob("*.py")
        if re.search(r"^def run\(", path.read_text(encoding="utf-8"), re.M)
    )
    assert len(tools) == 7, tools
    by_module = {target.split(":")[0]: name for name, target in scripts.items()}
    for tool in tools:
        name = by_module.get(f"data_tools.{tool}")
        assert name, f"no console script runs data_tools.{tool}"
        expected = (
            "tf-recurrent-seg-synthetic"
            if tool == "synthetic"
            else f"tf-recurrent-seg-convert-{tool.replace('_', '-')}"
        )
        assert name == expected
    for name, target in scripts.items():
        module_name, function = target.split(":")
        spec = importlib.util.find_spec(module_name)
        assert spec is not None, f"{name}: no module {module_name}"
        tree = ast.parse(pathlib.Path(spec.origin).read_text(encoding="utf-8"))
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert {function, "main"} <= functions, f"{name}: {module_name} lacks {function}() or main()"
        # Import it too, unless it defines flags on absl's global FLAGS at import (showcase, convert_tf1: both
        # define --backbone, so they cannot share a process).
        if not any(isinstance(node, ast.Expr) and "DEFINE_" in ast.unparse(node) for node in tree.body):
            module = importlib.import_module(module_name)
            assert callable(getattr(module, function)) and callable(module.main), name

    # From another directory, without the checkout on the path: the installed package (make test installs it).
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", "data_tools.synthetic", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "No module named data_tools" in result.stderr:
        pytest.skip("the installed tf_recurrent_seg predates data_tools' packaging: run `pip install -e .`")
    assert result.returncode in (0, 1) and "--output_dir" in result.stdout, result.stderr[-2000:]


# ------------------------------------------------------------------------------------------- the quick start, run

# Appended to the README's commands (absl: the last value wins) so that the chain runs in minutes on tiny data.
QUICK_START_SHRINK = {
    "data_tools.synthetic": ["--num_train=16", "--num_validation=4", "--num_test=4"],
    "tf_recurrent_seg.cli.pretrain": [
        "--config.data.num_train=16",
        "--config.data.num_validation=4",
        "--config.train.num_steps=2",
        "--config.train.batch_size=4",
    ],
    "tf_recurrent_seg.cli.train": [
        "--config.train.num_steps=2",
        "--config.train.batch_size=2",
        "--config.train.eval_examples=4",
    ],
    "tf_recurrent_seg.cli.evaluate": ["--max_examples=4"],
}


def _run(words: list[str], cwd: pathlib.Path, where: str) -> subprocess.CompletedProcess:
    executable = {
        "python": [sys.executable],
        "saved_model_cli": [os.path.join(os.path.dirname(sys.executable), "saved_model_cli")],
    }
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [*executable[words[0]], *words[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{where}: {' '.join(words)}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.large  # nine programs, each loading TensorFlow, and a TFLite conversion: minutes
def test_readme_quick_start_runs(tmp_path):
    """The README's synthetic quick start (generate, pretrain, train, evaluate, draw a scene, predict, export,
    saved_model_cli), run as written plus the size flags above, in a directory holding only `configs/`. Then the
    trained run is exported, evaluated and used for prediction from ANOTHER working directory: the vocabulary comes
    from the run's copy (config.data.vocabulary, data/synthetic_referring/vocabulary.txt, is relative)."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "configs").symlink_to(REPO / "configs")
    chain, seen = [], set()
    for command in all_commands():
        if not command.where.startswith("README.md:") or " ".join(command.words) in seen:
            continue
        text = " ".join(command.words)
        if (
            "synthetic_referring" in text
            or "rmi_synthetic" in text
            or "backbone_synthetic" in text
            or (command.words[0] == "saved_model_cli" or "scene.png" in text)
        ):
            seen.add(text)
            chain.append(command)
    steps = [program(command)[0] or command.words[0] for command in chain]
    assert steps == [
        "data_tools.synthetic",
        "tf_recurrent_seg.cli.pretrain",
        "tf_recurrent_seg.cli.train",
        "tf_recurrent_seg.cli.evaluate",
        "python",
        "tf_recurrent_seg.cli.predict",
        "tf_recurrent_seg.cli.export",
        "saved_model_cli",
    ], steps
    for command, step in zip(chain, steps):
        result = _run([*command.words, *QUICK_START_SHRINK.get(step, [])], project, command.where)
        if step == "saved_model_cli":
            assert "signature_def['serving_default']" in result.stdout
    run = project / "runs" / "rmi_synthetic"
    assert (run / "vocabulary.txt").read_bytes() == (
        project / "data" / "synthetic_referring" / "vocabulary.txt"
    ).read_bytes()
    assert (project / "out.png").is_file() and (project / "saved_models" / "rmi" / "model.tflite").is_file()

    _run(
        ["python", "-m", "tf_recurrent_seg.cli.export", f"--workdir={run}", "--export_dir=exported"],
        elsewhere,
        "elsewhere",
    )
    assert (elsewhere / "exported" / "1" / "saved_model.pb").is_file()
    _run(
        [
            "python",
            "-m",
            "tf_recurrent_seg.cli.predict",
            f"--workdir={run}",
            f"--image={project / 'scene.png'}",
            "--expression=the green diamond",
            "--output=out.png",
        ],
        elsewhere,
        "elsewhere",
    )
    _run(
        [
            "python",
            "-m",
            "tf_recurrent_seg.cli.evaluate",
            f"--workdir={run}",
            "--max_examples=2",
            f"--eval_records={project / 'data' / 'synthetic_referring' / 'test'}",
            "--out_dir=eval",
        ],
        elsewhere,
        "elsewhere",
    )
    assert (elsewhere / "out.png").is_file() and (elsewhere / "eval" / "metrics.json").is_file()
