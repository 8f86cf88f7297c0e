"""The checks every config section runs in `__post_init__`, and the error they raise.

A foundation module (no other module of the package): the sections live with what they set
(`data/config.py`, `model/config.py`, `config.py`), and all of them refuse a bad value the same
way, naming its key.
"""

from __future__ import annotations

import typing
from typing import Any


class ConfigError(ValueError):
    """A config key, value or file is wrong; the message names it."""


def check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _type_ok(value: Any, tp: Any) -> bool:
    if typing.get_origin(tp) is tuple:
        (elem, *_) = typing.get_args(tp)
        return isinstance(value, tuple) and all(_type_ok(v, elem) for v in value)
    if tp is float:
        return isinstance(value, float | int) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def check_types(obj: Any, section: str) -> None:
    """Rejects a wrongly typed field before any range check can misread it."""
    for name, tp in typing.get_type_hints(type(obj)).items():
        value = getattr(obj, name)
        if not _type_ok(value, tp):
            want = getattr(tp, "__name__", str(tp))
            raise ConfigError(
                f"{section}{name}: expected {want}, got {type(value).__name__} {value!r}"
            )
