"""Loading the REFER `refs(<split_by>).p` pickles without letting them run code.

A pickle is a program: its GLOBAL/STACK_GLOBAL opcodes import any callable and REDUCE calls it, so
`pickle.load` on a file from the internet can execute anything (`os.system`, `builtins.eval`, ...). Every
such import goes through `Unpickler.find_class`, which this loader overrides.

The refs files hold only builtin containers and scalars (a list of dicts of str/int/list), which pickle
encodes with dedicated opcodes and no import at all, in every protocol (0 to 5) and from Python 2 as well.
The only imports admitted are a short allowlist of constructors that cannot run code and that pickles of
such data may still contain: `set`/`frozenset` (protocols 0-3 build sets by calling them) and
`_codecs.encode(text, "latin1")` (Python 3 bytes in protocols 0-2), the latter only with the latin-1
codec. Everything else is refused with `RestrictedPickleError`, naming the file and the refused global.

Python 2 pickles store `str` as byte strings. They are loaded as bytes and decoded here as UTF-8 (the
REFER sentences are UTF-8), falling back to latin-1 for bytes that are not valid UTF-8, so dict keys and
sentences come back as `str`.

Example:
    >>> refs = load_restricted_pickle("refcoco/refs(unc).p")
    >>> refs[0]["sentences"][0]["sent"]
    'man in black'
"""

from __future__ import annotations

import _codecs
import _compat_pickle
import io
import os
import pickle
from typing import Any

__all__ = ["RestrictedPickleError", "load_restricted_pickle", "loads_restricted_pickle"]


class RestrictedPickleError(pickle.UnpicklingError):
    """The pickle imports a global that is not on the allowlist (it could execute code)."""


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """`_codecs.encode` as Python 3 pickles of bytes use it (protocols 0-2), restricted to latin-1."""
    if encoding.replace("_", "-").lower() not in ("latin1", "latin-1", "iso-8859-1"):
        raise RestrictedPickleError(f"_codecs.encode is admitted only with the latin-1 codec, not {encoding!r}")
    return _codecs.encode(text, "latin1", errors)


# (module, name) as find_class receives them (Python 2 names are mapped to Python 3 ones first).
_ALLOWED_GLOBALS = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        # encoding="bytes": Python 2 `str` objects stay bytes and are decoded afterwards (see `_to_text`).
        super().__init__(file, fix_imports=True, encoding="bytes", errors="strict")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (`__builtin__.set`), as pickle's own find_class maps them with fix_imports.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise RestrictedPickleError(
            f"{self._source}: refused to load global {module}.{name}: the pickle tries to import a callable, "
            "which could execute code; the REFER refs files hold only lists, dicts, strings and numbers"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise RestrictedPickleError(f"{self._source}: refused persistent id {pid!r}")


def _decode_bytes(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin1")


def _to_text(value: Any) -> Any:
    """Recursively turns bytes (Python 2 `str`) into str in containers; other values are unchanged."""
    if isinstance(value, bytes):
        return _decode_bytes(value)
    if isinstance(value, list):
        return [_to_text(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_to_text(item) for item in value)
    if isinstance(value, dict):
        return {_to_text(key): _to_text(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        return type(value)(_to_text(item) for item in value)
    return value


def loads_restricted_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """`load_restricted_pickle` of pickle bytes; `source` names them in errors."""
    try:
        return _to_text(_RestrictedUnpickler(io.BytesIO(data), source).load())
    except RestrictedPickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        raise pickle.UnpicklingError(f"{source}: not a valid pickle of plain data: {error!r}") from error


def load_restricted_pickle(path: str | os.PathLike) -> Any:
    """Loads a pickle of plain data (containers, strings, numbers) and refuses anything that imports code.

    Args:
        path: the pickle file, e.g. `refcoco/refs(unc).p`.

    Returns:
        The unpickled object, with Python 2 byte strings decoded to `str` (UTF-8, else latin-1).

    Raises:
        RestrictedPickleError: the pickle imports a global outside the allowlist; the message names the
            file and the global.
        pickle.UnpicklingError: the file is not a valid pickle (truncated, corrupt).
        FileNotFoundError: the file does not exist.
    """
    with open(path, "rb") as file:
        data = file.read()
    return loads_restricted_pickle(data, os.fspath(path))
