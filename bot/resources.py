"""Where the shipped data folders (messages/, examples/) are, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The shipped folder ``name``: inside the wheel (``bot/_data/name``) or the checkout."""
    installed = _PACKAGE / "_data" / name
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / name


def messages_dir() -> Path:
    return data_dir("messages")


def examples_dir() -> Path:
    return data_dir("examples")
