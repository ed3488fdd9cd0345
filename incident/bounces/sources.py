"""Where bounces come from: a file holding one message, a directory of `.eml` files, an mbox
file or a Maildir (Python's `mailbox`), each message named by where it is so that a problem
can be found again."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator, Sequence
from pathlib import Path

from incident.bounces.model import MAX_MESSAGE_BYTES, SourceMessage
from incident.errors import BadInput, Location


def read_sources(paths: Sequence[Path]) -> Iterator[SourceMessage]:
    """Every message of `paths`, in order; BadInput (before reading any) when a path does
    not exist or is neither a message file, an mbox, a Maildir nor a directory of .eml files."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise BadInput(f"{missing[0]}: no such file or directory{more}",
                       problems=[(Location(str(p)), "no such file or directory")
                                 for p in missing], hint="nothing was read")
    for path in paths:
        if path.is_dir():
            yield from (_maildir(path) if (path / "cur").is_dir() and (path / "new").is_dir()
                        else _eml_files(path))
        elif _is_mbox(path):
            yield from _mbox(path)
        else:
            yield _file(path, str(path))


def _is_mbox(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(5) == b"From "
    except OSError:
        return False  # _file reports why it cannot be read


def _file(path: Path, where: str) -> SourceMessage:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_MESSAGE_BYTES + 1)  # parse_bounce refuses what is larger
    except OSError as exc:
        return SourceMessage(where=where, data=None,
                             problem=f"cannot read: {exc.strerror or exc}")
    return SourceMessage(where=where, data=data)


def _eml_files(directory: Path) -> Iterator[SourceMessage]:
    for path in sorted(directory.glob("*.eml")):
        if path.is_file():
            yield _file(path, str(path))


def _mbox(path: Path) -> Iterator[SourceMessage]:
    try:
        box = mailbox.mbox(str(path), create=False)
        keys = sorted(box.iterkeys())
    except (OSError, mailbox.Error) as exc:
        yield SourceMessage(where=str(path), data=None, problem=f"cannot read mbox: {exc}")
        return
    try:
        for number, key in enumerate(keys, start=1):
            yield _get(box, key, f"{path}#{number}")
    finally:
        box.close()


def _maildir(path: Path) -> Iterator[SourceMessage]:
    box = mailbox.Maildir(str(path), factory=None, create=False)
    try:
        keys = sorted(box.iterkeys())
    except OSError as exc:
        yield SourceMessage(where=str(path), data=None, problem=f"cannot read Maildir: {exc}")
        return
    for key in keys:
        yield _get(box, key, f"{path}/{key}")


def _get(box: mailbox.Mailbox[mailbox.Message], key: str, where: str) -> SourceMessage:
    try:
        return SourceMessage(where=where, data=box.get_bytes(key))
    except (OSError, KeyError, mailbox.Error) as exc:  # removed meanwhile, unreadable
        return SourceMessage(where=where, data=None, problem=f"cannot read: {exc}")
