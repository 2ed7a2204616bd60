"""Try exported models in a browser: a local Gradio page (needs the `app` extra: pip install -e ".[app]").

    make demo && make app
    tf-recurrent-seg-app --export_dir saved_models/demo_rmi --parsing_export_dir saved_models/demo_lg_lstm
    tf-recurrent-seg-app --preset saved_models/demo_rmi/preset --parsing_preset saved_models/demo_lg_lstm/preset

`--export_dir` is a referring SavedModel (RMI for the per-word outputs) and `--parsing_export_dir` a parsing one,
each a SavedModel directory or a model base path with version folders (the highest is served, as TF Serving does).
The page answers from the SavedModels' signatures. `--preset` and `--parsing_preset` serve a preset instead (one of
the two flags per tab), answering with the preset's own prediction code (`Preset.segment`). What it shows:
docs/app.md.
"""

from __future__ import annotations

import os
import threading

from absl import app, flags

from tf_recurrent_seg.cli.common import run_app

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def define_flags(flag_values: flags.FlagValues) -> None:
    """The command's flags, defined on `flag_values` when the command runs (importing defines none)."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("export_dir", None, "The referring SavedModel (or its model base path).", **fv)
    flags.DEFINE_string("parsing_export_dir", None, "A parsing SavedModel (or base path): adds the parsing tab.", **fv)
    flags.DEFINE_string("preset", None, "A referring preset directory (instead of --export_dir).", **fv)
    flags.DEFINE_string(
        "parsing_preset",
        None,
        "A parsing preset directory (instead of --parsing_export_dir): adds the parsing tab.",
        **fv,
    )
    flags.DEFINE_string("host", "127.0.0.1", "Address to serve on (0.0.0.0: reachable from other machines).", **fv)
    flags.DEFINE_integer("port", 7860, "Port to serve on (0: a free one).", lower_bound=0, upper_bound=65535, **fv)
    flags.DEFINE_integer("num_scenes", 4, "Test scenes of the demo offered on each tab.", lower_bound=0, **fv)
    flags.DEFINE_bool("browser", True, "Open the page in the default browser.", **fv)


def main(argv, flag_values: flags.FlagValues = flags.FLAGS) -> str:
    """Loads the models, serves the page until interrupted; returns its address."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not (flag_values.export_dir or flag_values.preset):
        raise app.UsageError(
            "--export_dir is required, or --preset (make demo writes saved_models/demo_rmi, its preset in it)"
        )
    for export_flag, preset_flag in (("export_dir", "preset"), ("parsing_export_dir", "parsing_preset")):
        if flag_values[export_flag].value and flag_values[preset_flag].value:
            raise app.UsageError(f"give --{export_flag} or --{preset_flag}, not both: they serve the same tab")
    try:
        from tf_recurrent_seg.demo import page as page_lib  # optional: gradio, the [app] extra
    except ImportError as error:
        raise app.UsageError(f'the page needs the app extra ({error}): pip install -e ".[app]"') from None
    try:
        referring, parsing = page_lib.load_models(
            flag_values.export_dir,
            flag_values.parsing_export_dir,
            preset=flag_values.preset,
            parsing_preset=flag_values.parsing_preset,
        )
    except (OSError, ValueError) as error:  # a missing directory, or a model of the other tab's task
        raise app.UsageError(str(error)) from None
    page = page_lib.build_page(referring, parsing, flag_values.num_scenes)
    page_lib.launch(page, flag_values.host, flag_values.port or None, inbrowser=flag_values.browser)
    print(f"Serving {referring.path}{' and ' + parsing.path if parsing else ''} on {page.local_url} (Ctrl+C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        page.close()
    return page.local_url


def run() -> None:
    """Console-script entry point."""
    run_app(define_flags, main)


if __name__ == "__main__":
    run()
