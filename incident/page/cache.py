"""What a build leaves next to its site (`.<DIR>.cache.json`) for the next one, possibly in
another process (the rebuild after each notice): the public view of each incident by its last
event, and the incident pages on disk by the incident head they show, under the builder's
fingerprint (templates and settings). Only public data is in it. A missing, stale or unreadable
cache only makes the next build slower."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from incident.page.model import PublicIncident

VERSION = 1


@dataclass
class BuildCache:
    """The cache of the site at `root`."""

    root: Path
    views: dict[str, tuple[int, str, PublicIncident | None]] = field(default_factory=dict)
    pages: dict[str, str] = field(default_factory=dict)  # path -> incident head shown
    fingerprint: str = ""
    saved: dict[str, dict[str, Any]] = field(default_factory=dict)  # views as last saved
    # (SHA-256, size, mtime_ns) of each file written, so that the next process need not
    # read the site back to know which files change
    stamps: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)  # SiteBuilder.memo()

    @property
    def path(self) -> Path:
        return self.root.parent / f".{self.root.name}.cache.json"

    def load(self) -> None:
        """Read the cache if there is a usable one."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != VERSION:
                return
            self.views = {key: (int(v["seq"]), str(v["head"]),
                                PublicIncident.from_json(v["view"]) if v["view"] else None)
                          for key, v in data["views"].items()}
            self.saved = dict(data["views"])
            self.memo = dict(data.get("memo", {}))
            self.stamps = {path: (str(v[0]), int(v[1]), int(v[2]))
                           for path, v in data.get("stamps", {}).items()}
            self.pages, self.fingerprint = dict(data["pages"]), str(data["fingerprint"])
        except (OSError, ValueError, KeyError, TypeError):
            self.views, self.pages, self.fingerprint = {}, {}, ""

    def kept(self, fingerprint: str) -> Callable[[str], str | None]:
        """The incident head the page at a path shows, if it is on disk as rendered under
        `fingerprint`."""
        def head(path: str) -> str | None:
            if fingerprint != self.fingerprint or path not in self.pages:
                return None
            return self.pages[path] if (self.root / path).is_file() else None
        return head

    def save(self) -> None:
        """Write the cache (whole, then moved into place)."""
        for key, (seq, head, view) in self.views.items():
            known = self.saved.get(key)
            if known is None or (known["seq"], known["head"]) != (seq, head):
                self.saved[key] = {"seq": seq, "head": head,
                                   "view": view.to_json() if view else None}
        data: dict[str, Any] = {"version": VERSION, "fingerprint": self.fingerprint,
                                "pages": self.pages, "views": self.saved,
                                "stamps": self.stamps, "memo": self.memo}
        temporary = self.path.with_name(self.path.name + ".tmp")
        with contextlib.suppress(OSError):
            temporary.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")),
                                 encoding="utf-8")
            os.replace(temporary, self.path)
