"""What a build leaves next to its site (the directory `.<DIR>.cache/`) for the next one,
possibly in another process (the rebuild after each notice). Only public data is in it.

- `index.json`: the builder's fingerprint (templates and settings), the incident pages on
  disk by the incident head they show, the (digest, size, mtime) of each file written, and
  per incident its last event (seq, head) with the summary a build needs of an unchanged
  incident (page/model.py `DeferredIncident`);
- `entries`: every incident's index entries and API document as rendered (UTF-8, spliced as
  they are into the index pages and API documents), where the index says (per incident its
  entries' keys, offsets and lengths): one read, where one file per incident cost a new
  process 1,000 opens. Appended to (a notice adds ~20 KB, not the 11 MB of 1,000 open
  incidents again), rewritten whole with a new generation (its first line) once more than
  half of it is stale; written under the site's lock;
- one file per incident, `<id>.incident`: a JSON header line (its seq and head), then its
  public view as JSON — read and parsed only if asked for;
- `templates/`: the page templates compiled (jinja's bytecode cache).

A rebuild after one notice reads the index and the entries, reads the changed incident from
the record, writes its file (complete, then `os.replace`), appends its entries, and writes
the index last. A missing, stale or unreadable file only makes the next build
slower: what it held is read again from the record, or rendered or compiled again."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from jinja2 import FileSystemBytecodeCache
from jinja2.bccache import Bucket

from incident.page.model import DeferredIncident, PublicIncident
from incident.page.site import Entry
from incident.page.workers import in_child
from incident.page.writer import locked

VERSION = 6
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
    _viewed: dict[str, tuple[int, str]] = field(default_factory=dict)  # incident files
    _raw: dict[str, bytes] = field(default_factory=dict)  # views' JSON read or written
    # the entries file: its generation, and per incident the (name, head, lang, here,
    # offset, length) of each entry in it, flat
    _generation: str = ""
    _spans: dict[str, list[Any]] = field(default_factory=dict)
    _spans_fingerprint: str = ""  # what those entries were rendered under
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
            spans: dict[str, list[Any]] = {}
            for iid, (seq, head, summary, flat) in data["incidents"].items():
                view: PublicIncident | None = DeferredIncident(
                    iid, head, summary, partial(self._view, iid, fallback)) if summary else None
                views[iid] = (int(seq), str(head), view)
                spans[iid] = flat
            generation = str(data["entries"])
        except (OSError, ValueError, KeyError, TypeError):
            self._index = b""
            return
        self.fingerprint, self.pages, self.stamps, self.views = fingerprint, pages, stamps, views
        # The index is written after the incidents' files: each is there as of the index
        # (and checked when read).
        self._viewed = {iid: (seq, head) for iid, (seq, head, view) in views.items() if view}
        self._read_entries(generation, spans)

    def _read_entries(self, generation: str, spans: dict[str, list[Any]]) -> None:
        """The entries the index places in the entries file (rendered under the index's
        fingerprint), if it is the generation the index names."""
        try:
            with open(os.path.join(self._dir, "entries"), "rb") as handle:
                if handle.readline() != _generation_line(generation):
                    return
                data = handle.read()
            rendered: dict[str, list[Entry]] = {}
            for iid, flat in spans.items():
                found = rendered[iid] = []
                for n in range(0, len(flat), 6):
                    name, head, lang, here, at, length = flat[n:n + 6]
                    if at + length > len(data):  # cut short
                        return
                    found.append((name, head, lang, here, data[at:at + length]))
        except (OSError, ValueError, TypeError):
            return
        self.rendered, self._generation, self._spans = rendered, generation, spans
        self._spans_fingerprint = self.fingerprint

    def _view_json(self, iid: str) -> bytes | None:
        """The view's JSON from the incident's file (read now if not yet)."""
        if iid not in self._raw and iid in self._viewed:
            try:
                with open(self.file(iid), "rb") as handle:
                    header = json.loads(handle.readline())
                    data = handle.read()
                if (header["version"], header["id"], header["seq"], header["head"],
                        header["view"]) == (VERSION, iid, *self._viewed[iid], len(data)):
                    self._raw[iid] = data
            except (OSError, ValueError, KeyError, TypeError):
                pass
            if iid not in self._raw:
                del self._viewed[iid]  # written again by `save`
        return self._raw.get(iid)

    def _view(self, iid: str, fallback: Callable[[str], PublicIncident | None]
              ) -> PublicIncident:
        raw = self._view_json(iid)
        if raw:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                return PublicIncident.from_json(json.loads(raw))
        if in_child():  # the record is the parent's to read
            raise LookupError(f"incident {iid}: its view is not in the cache")
        view = fallback(iid)
        if view is None:
            raise LookupError(f"incident {iid} has no public notice any more")
        return view

    def kept(self, fingerprint: str) -> Callable[[str], str | None]:
        """The incident head the page at a path shows, if it is on disk as rendered under
        `fingerprint`."""
        root = str(self.root)
        found: dict[str, set[str]] = {}  # the files in each folder: one listing, no stat each

        def head(path: str) -> str | None:
            if fingerprint != self.fingerprint or path not in self.pages:
                return None
            folder, _, name = path.rpartition("/")
            if folder not in found:
                try:
                    with os.scandir(os.path.join(root, folder)) as listing:
                        found[folder] = {e.name for e in listing if e.is_file()}
                except OSError:
                    found[folder] = set()
            return self.pages[path] if name in found[folder] else None
        return head

    def save(self, rendered: dict[str, list[Entry]]) -> None:
        """Write the files of the incidents whose view changed, the entries if any changed,
        then the index (each complete, then moved into place); trouble only costs the next
        build time."""
        with contextlib.suppress(OSError), locked(self.root):
            self.directory.mkdir(exist_ok=True)
            incidents: dict[str, list[Any]] = {}
            wanted: dict[str, list[Entry]] = {}
            for iid, (seq, head, view) in sorted(self.views.items()):
                incidents[iid] = [seq, head, view.summary() if view else None, []]
                if view is None:
                    continue
                if self._viewed.get(iid) != (seq, head):
                    self._write_view(iid, seq, head, view)
                wanted[iid] = sorted(rendered.get(iid, []))
            self._save_entries(wanted)
            for iid, flat in self._spans.items():
                incidents[iid][3] = flat
            index = _encode({"version": VERSION, "fingerprint": self.fingerprint,
                             "pages": self.pages, "stamps": self.stamps,
                             "entries": self._generation, "incidents": incidents}).encode()
            if index != self._index:
                _replace(self.directory / "index.json", index)
                self._index = index
            with contextlib.suppress(OSError):  # the single file of earlier versions
                (self.root.parent / f".{self.root.name}.cache.json").unlink()

    def _save_entries(self, wanted: dict[str, list[Entry]]) -> None:
        """Append the entries of the incidents whose entries changed, or write the file
        anew (a new generation) when there is none to append to or most of it is stale."""
        def keys(flat: list[Any]) -> list[Any]:
            return [x for n in range(0, len(flat), 6) for x in flat[n:n + 4]]

        if self._spans_fingerprint != self.fingerprint:  # templates or settings changed
            self._spans, self._spans_fingerprint = {}, self.fingerprint
        changed = {iid: entries for iid, entries in wanted.items()
                   if iid not in self._spans
                   or keys(self._spans[iid]) != [x for e in entries for x in e[:4]]}
        spans = {iid: flat for iid, flat in self._spans.items()
                 if iid in wanted and iid not in changed}
        if not changed and len(spans) == len(self._spans):
            return
        path = self.directory / "entries"
        live = sum(len(e[4]) for entries in wanted.values() for e in entries)
        end = -1
        if self._generation:
            with contextlib.suppress(OSError), open(path, "rb") as existing:
                if existing.readline() == _generation_line(self._generation):
                    start = existing.tell()
                    end = existing.seek(0, os.SEEK_END) - start
        if end < 0 or end > 2 * live:  # nothing to append to, or mostly stale: anew
            changed, spans, end = wanted, {}, 0
            self._generation = secrets.token_hex(8)
        pieces: list[bytes] = []
        for iid, entries in changed.items():
            flat = spans[iid] = []
            for entry in entries:
                flat += (*entry[:4], end, len(entry[4]))
                end += len(entry[4])
                pieces.append(entry[4])
        if len(spans) == len(changed):  # all of them: written whole
            _replace(path, b"".join([_generation_line(self._generation), *pieces]))
        else:
            with open(path, "ab") as handle:
                handle.write(b"".join(pieces))
        self._spans = spans

    def _write_view(self, iid: str, seq: int, head: str, view: PublicIncident) -> None:
        text = _encode(view.to_json()).encode()
        header = {"version": VERSION, "id": iid, "seq": seq, "head": head, "view": len(text)}
        _replace(Path(self.file(iid)), b"".join([_encode(header).encode(), b"\n", text]))
        self._viewed[iid], self._raw[iid] = (seq, head), text


def _generation_line(generation: str) -> bytes:
    return _encode({"version": VERSION, "generation": generation}).encode() + b"\n"


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
