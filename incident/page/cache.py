"""What a build leaves next to its site (the directory `.<DIR>.cache/`) for the next one,
possibly in another process (the rebuild after each notice). Only public data is in it.

- `index.json`: the builder's fingerprint (templates and settings), the incident pages on
  disk by the incident head they show, the (digest, size, mtime) of each file written, and
  per incident its last event (seq, head) with the summary a build needs of an unchanged
  incident (page/model.py `DeferredIncident`);
- one file per incident, `<id>.incident`: a JSON header line (its seq, head and fingerprint,
  the byte lengths of what follows), then its index entries and API document as rendered
  (UTF-8, spliced as they are into the index pages and API documents), then its public view
  as JSON — the view read and parsed only if asked for.

A rebuild after one notice reads the index and the incident files' header and entries (not
their views), reads the changed incident from the record, and writes back only the files of
incidents whose view or rendered entries changed (each complete, then `os.replace`), the
index last. `templates/`: the page templates compiled (jinja's bytecode cache). A missing,
stale or unreadable file only makes the next build slower: what it held is read again from
the record, or rendered or compiled again."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from jinja2 import FileSystemBytecodeCache
from jinja2.bccache import Bucket

from incident.page.model import DeferredIncident, PublicIncident
from incident.page.site import Entry

VERSION = 4
SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")


def _encode(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


@dataclass
class BuildCache:
    """The cache of the site at `root`."""

    root: Path
    views: dict[str, tuple[int, str, PublicIncident | None]] = field(default_factory=dict)
    pages: dict[str, str] = field(default_factory=dict)  # path -> incident head shown
    fingerprint: str = ""
    # (SHA-256, size, mtime_ns) of each file written, so that the next process need not
    # read the site back to know which files change
    stamps: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    # index entries and API documents read back, by incident (rendered under `fingerprint`)
    rendered: dict[str, list[Entry]] = field(default_factory=dict)
    # per incident file as on disk: (seq, head, fingerprint, entry keys), and where its
    # view is in it (offset, length) or its view's JSON (once read or written)
    _saved: dict[str, tuple[int, str, str, frozenset[tuple[str, ...]]]] = field(
        default_factory=dict)
    _raw: dict[str, tuple[int, int] | bytes] = field(default_factory=dict)
    _index: bytes = b""  # index.json as last read or written

    @property
    def directory(self) -> Path:
        return self.root.parent / f".{self.root.name}.cache"

    def file(self, iid: str) -> str:
        name = iid if SAFE.fullmatch(iid) else hashlib.sha256(iid.encode()).hexdigest()
        return os.path.join(self._dir, f"{name}.incident")

    @property
    def _dir(self) -> str:
        return os.path.join(self.root.parent, f".{self.root.name}.cache")

    def compiled(self) -> FileSystemBytecodeCache:
        """Where the page templates are kept compiled (`templates/`), for jinja: a new
        process (the rebuild after a notice) does not compile them again."""
        return CompiledTemplates(os.path.join(self._dir, "templates"))

    def load(self, fallback: Callable[[str], PublicIncident | None]) -> None:
        """Read the cache if there is a usable one. `fallback(id)`: an incident's view from
        the record, for one whose file turns out unreadable when its view is needed."""
        try:
            self._index = (self.directory / "index.json").read_bytes()
            data = json.loads(self._index)
            if data.get("version") != VERSION:
                return
            fingerprint, pages = str(data["fingerprint"]), dict(data["pages"])
            stamps = {path: (str(v[0]), int(v[1]), int(v[2]))
                      for path, v in data["stamps"].items()}
            views: dict[str, tuple[int, str, PublicIncident | None]] = {}
            for iid, (seq, head, summary) in data["incidents"].items():
                view: PublicIncident | None = DeferredIncident(
                    iid, head, summary, partial(self._view, iid, fallback)) if summary else None
                views[iid] = (int(seq), str(head), view)
        except (OSError, ValueError, KeyError, TypeError):
            self._index = b""
            return
        self.fingerprint, self.pages, self.stamps, self.views = fingerprint, pages, stamps, views
        for iid, (seq, head, view) in views.items():
            if view is not None:
                self._read(iid, seq, head)

    def _read(self, iid: str, seq: int, head: str) -> None:
        """An incident file's header and entries (its view stays on disk until asked for)."""
        try:
            with open(self.file(iid), "rb") as handle:
                header = json.loads(handle.readline())
                if (header["version"], header["id"], header["seq"], header["head"]) != (
                        VERSION, iid, seq, head):
                    return
                lengths = [int(e[4]) for e in header["entries"]]
                data = handle.read(sum(lengths))
                at, size = handle.tell(), os.fstat(handle.fileno()).st_size
            if len(data) != sum(lengths) or size - at != header["view"]:  # cut short
                return
            entries: list[Entry] = []
            start = 0
            for (name, entry_head, lang, here, _), length in zip(header["entries"], lengths,
                                                                 strict=True):
                entries.append((str(name), str(entry_head), str(lang), str(here),
                                data[start:start + length]))
                start += length
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return
        self._raw[iid] = (at, int(header["view"]))
        if header["fingerprint"] == self.fingerprint:
            self.rendered[iid] = entries
        self._saved[iid] = (seq, head, str(header["fingerprint"]),
                            frozenset(e[:4] for e in entries))

    def _view_json(self, iid: str) -> bytes | None:
        """The view's JSON as in the incident's file (read now if not yet)."""
        raw = self._raw.get(iid)
        if isinstance(raw, tuple):
            with contextlib.suppress(OSError), open(self.file(iid), "rb") as handle:
                handle.seek(raw[0])
                data = handle.read(raw[1] + 1)
                if len(data) == raw[1]:
                    self._raw[iid] = data
                    return data
            return None
        return raw

    def _view(self, iid: str, fallback: Callable[[str], PublicIncident | None]
              ) -> PublicIncident:
        raw = self._view_json(iid)
        if raw:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                return PublicIncident.from_json(json.loads(raw))
        view = fallback(iid)
        if view is None:
            raise LookupError(f"incident {iid} has no public notice any more")
        return view

    def kept(self, fingerprint: str) -> Callable[[str], str | None]:
        """The incident head the page at a path shows, if it is on disk as rendered under
        `fingerprint`."""
        root = str(self.root)

        def head(path: str) -> str | None:
            if fingerprint != self.fingerprint or path not in self.pages:
                return None
            return self.pages[path] if os.path.isfile(os.path.join(root, path)) else None
        return head

    def save(self, rendered: dict[str, list[Entry]]) -> None:
        """Write the files of the incidents whose view or rendered entries changed, then
        the index (each complete, then moved into place); trouble only costs the next
        build time."""
        with contextlib.suppress(OSError):
            self.directory.mkdir(exist_ok=True)
            incidents: dict[str, list[Any]] = {}
            for iid, (seq, head, view) in sorted(self.views.items()):
                incidents[iid] = [seq, head, view.summary() if view else None]
                if view is not None:
                    self._write(iid, seq, head, view, sorted(rendered.get(iid, [])))
            index = _encode({"version": VERSION, "fingerprint": self.fingerprint,
                             "pages": self.pages, "stamps": self.stamps,
                             "incidents": incidents}).encode()
            if index != self._index:
                _replace(self.directory / "index.json", index)
                self._index = index
            with contextlib.suppress(OSError):  # the single file of earlier versions
                (self.root.parent / f".{self.root.name}.cache.json").unlink()

    def _write(self, iid: str, seq: int, head: str, view: PublicIncident,
               entries: list[Entry]) -> None:
        keys = frozenset(e[:4] for e in entries)
        saved = self._saved.get(iid)
        if saved == (seq, head, self.fingerprint, keys):
            return
        raw = self._view_json(iid) if saved is not None and saved[:2] == (seq, head) else None
        text = raw or _encode(view.to_json()).encode()
        header = {"version": VERSION, "id": iid, "seq": seq, "head": head,
                  "fingerprint": self.fingerprint,
                  "entries": [[*e[:4], len(e[4])] for e in entries], "view": len(text)}
        _replace(Path(self.file(iid)), b"".join([_encode(header).encode(), b"\n",
                                                 *(e[4] for e in entries), text]))
        self._saved[iid], self._raw[iid] = (seq, head, self.fingerprint, keys), text


class CompiledTemplates(FileSystemBytecodeCache):
    """jinja's bytecode cache (checked against each template's source), where a missing,
    damaged or unwritable file only costs compiling the template again."""

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # damaged: compile again
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        with contextlib.suppress(OSError):
            os.makedirs(self.directory, exist_ok=True)
            super().dump_bytecode(bucket)
