"""The base of the package's backbones, heads and parsing segmenters: a functional Keras model built from explicit
keyword arguments, whose `get_config` returns exactly those arguments (Keras Hub's convention)."""

import keras

from tf_recurrent_seg.presets import PresetMixin


def pop_dtype_policy(kwargs: dict) -> keras.DTypePolicy:
    """Removes `dtype` from a model's keyword arguments; returns it as a policy (default: the global one).

    A functional model ignores `dtype`, so each model builds its layers under this policy
    (`precision.policy_scope`) and sets it as its own `dtype_policy`: a saved model keeps its policy when it is
    loaded under another global one.
    """
    dtype = kwargs.pop("dtype", None)
    return keras.dtype_policies.get(dtype) if dtype else keras.config.dtype_policy()


def constructor_arguments(frame_locals: dict) -> dict:
    """A constructor's own keyword arguments, from `locals()` called first thing in `__init__`: everything but
    `self`, `kwargs` (the `keras.Model` arguments) and `__class__`."""
    return {name: value for name, value in frame_locals.items() if name not in ("self", "kwargs", "__class__")}


class FunctionalModel(PresetMixin, keras.Model):
    """A functional `keras.Model` subclass: `__init__` builds the graph and calls `super().__init__(inputs, outputs)`.

    After `super().__init__`, a subclass records its arguments with `_set_arguments`: one attribute each, and
    `get_config` returns exactly them next to `name`, `trainable` and `dtype`; `from_config` passes the config back
    to `__init__`.
    """

    def _set_arguments(self, **arguments) -> None:
        self._argument_names = tuple(arguments)
        for name, value in arguments.items():
            setattr(self, name, value)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            **{name: getattr(self, name) for name in self._argument_names},
        }

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)
