"""Tasks: one object per model family that gives training, validation and export what differs between the families
(the TF Model Garden's `official/vision/tasks`).

`TASKS` maps every `config.model.name` to its task class; it is made from the task classes' `MODELS` and is the
package's one list of model names (`defaults` and `models.build_model` read it). `get_task(config)` is the task of
a run's config.
"""

from __future__ import annotations

import ml_collections

from tf_recurrent_seg.tasks.base import Task
from tf_recurrent_seg.tasks.human_parsing import HumanParsingTask
from tf_recurrent_seg.tasks.parsing import ParsingTask
from tf_recurrent_seg.tasks.referring import ReferringTask

# config.model.name -> its task class.
TASKS: dict[str, type[Task]] = {
    name: task for task in (ReferringTask, ParsingTask, HumanParsingTask) for name in task.MODELS
}

__all__ = [
    "TASKS",
    "HumanParsingTask",
    "ParsingTask",
    "ReferringTask",
    "Task",
    "default_config",
    "get_task",
    "model_names",
]


def get_task(config: ml_collections.ConfigDict) -> Task:
    """The task of `config.model.name` (`TASKS`), made from `config`.

    Example:
    ```python
    from tf_recurrent_seg.defaults import referring_config
    task = get_task(referring_config("rmi"))  # a ReferringTask
    model = task.build_model()
    ```
    """
    name = config.model.name
    if name not in TASKS:
        raise ValueError(f"config.model.name must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name](config)


def default_config(name: str) -> ml_collections.ConfigDict:
    """The schema config of model `name` (`defaults.referring_config` / `parsing_config` /
    `human_parsing_config`), every field at its
    default; a config for a model that came without one (a preset, a bare `.keras` file)."""
    if name not in TASKS:
        raise ValueError(f"model name must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name].default_config(name)


def model_names(family: str) -> tuple[str, ...]:
    """The model names of a family ("referring" or "parsing", which includes the human parsers cocnn and
    lg_lstm_cocnn), in `TASKS`' order."""
    return tuple(name for name, task in TASKS.items() if task.family == family)
