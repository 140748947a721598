"""Command-line options whose defaults come from ``WARPZIP_*`` environment variables, shared by
``warpzip serve`` (app.config) and ``warpzip device`` so a name means one thing in both and a bad
variable is reported under its own name, not as if the user had typed the flag."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


def parser(convert: Callable[[str], T], what: str) -> Callable[[str], T]:
    """``convert`` as an argparse type: its ValueError becomes the one-line ``not <what>: 'text'``,
    the same for a flag and for its variable (:func:`env_default`)."""
    def parse(text: str) -> T:
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    return parse


integer = parser(int, "an integer")
number = parser(float, "a number")


def variable(flag: str) -> str:
    """``--max-body`` → ``WARPZIP_MAX_BODY``."""
    return "WARPZIP_" + flag.lstrip("-").replace("-", "_").upper()


def env_default(parser: argparse.ArgumentParser, flag: str, kind: Callable[[str], T], default: T,
                choices: Iterable[object] | None = None, environ: Mapping[str, str] | None = None) -> T:
    """``default``, or the value of ``flag``'s variable in ``environ`` (the process's by default)
    parsed with ``kind`` (an argparse type such as :data:`integer`); a bad value is
    ``parser.error`` naming the variable."""
    env = os.environ if environ is None else environ
    name = variable(flag)
    if name not in env:
        return default
    try:
        value = kind(env[name])
    except argparse.ArgumentTypeError as exc:
        parser.error(f"{name}: {exc}")
    if choices is not None and value not in choices:
        parser.error(f"{name}: invalid choice {env[name]!r} (choose from {', '.join(map(str, choices))})")
    return value
