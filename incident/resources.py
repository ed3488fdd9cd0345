"""Where the shipped playbooks, templates and examples are: the repo checkout or the wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped(name: str) -> Path:
    """Path of a shipped data folder or file (`playbooks`, `templates`, `examples`, ...)."""
    installed = _PACKAGE / "_data" / name
    if installed.exists():
        return installed
    return _PACKAGE.parent / name
