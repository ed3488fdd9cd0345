"""Writing the site into its directory so that a reader (a web server, a sync) never sees a
missing or half-written file.

Chosen: each changed file is written complete in a staging directory next to the site, then
moved into place with `os.replace` (atomic on POSIX and Windows, same filesystem); unchanged
files (same bytes, compared by SHA-256) are not touched, so their mtime stays and a sync
uploads only what changed. Pages are moved before the indexes that link to them. The site's
directory stays a real directory (not a symlink swapped under it), which every web server,
`aiohttp` static route, bucket sync and rsync treats alike; a reader may see one file of the
old build next to one of the new, never a partial one. Two builders at once are serialised by
a lock file next to the site.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: one builder at a time is the operator's care
    fcntl = None  # type: ignore[assignment]

from incident.page.site import KEEP

LAST = ("index.html",)  # moved into place last: they link to everything else


@dataclass
class Written:
    """What one write changed."""

    directory: Path
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SiteWriter:
    """Writes builds of one site; remembers the digests it wrote, so that a rebuild compares
    against memory instead of reading every file back."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.known: dict[str, str] = {}  # path -> SHA-256 of the bytes last written there
        self._last: dict[str, bytes] = {}  # path -> the bytes object last written or found
        self._paths: frozenset[str] = frozenset()  # the paths of the previous build
        self._wanted: dict[str, str] = {}  # digests of the bytes being written
        # (digest, size, mtime_ns) by path from an earlier process, not checked yet
        self._stamps: dict[str, tuple[str, int, int]] = {}

    def remember(self, stamps: Mapping[str, tuple[str, int, int]],
                 paths: Iterable[str] = ()) -> None:
        """Take digests recorded by an earlier process, (digest, size, mtime_ns) by path; each
        counts once the file is found still as it was then, checked only when a build
        compares bytes with that file (not for the pages a build keeps: KEEP). `paths`: the
        other files of the earlier build (pages kept, not stamped)."""
        self._stamps = dict(stamps)
        # The files of the earlier build: a rebuild with the same paths has no stale page to
        # look for (as in one process).
        self._paths = frozenset(stamps).union(paths)

    def _known(self, path: str) -> str | None:
        """The digest of the bytes at `path`, if known without reading them."""
        stamp = self._stamps.pop(path, None)
        if stamp is not None:
            with contextlib.suppress(OSError):
                found = os.stat(os.path.join(self.directory, path))
                if (found.st_size, found.st_mtime_ns) == stamp[1:]:
                    self.known[path] = stamp[0]
        return self.known.get(path)

    def stamps(self, paths: Iterable[str]) -> dict[str, tuple[str, int, int]]:
        """(digest, size, mtime_ns) of each of `paths` this writer knows the digest of."""
        out = {}
        for path in paths:
            if path in self.known:
                with contextlib.suppress(OSError):
                    found = (self.directory / path).stat()
                    out[path] = (self.known[path], found.st_size, found.st_mtime_ns)
        return out

    def write(self, files: Mapping[str, bytes]) -> Written:
        """Bring the directory to exactly `files` (paths relative to it)."""
        root = self.directory
        root.mkdir(parents=True, exist_ok=True)
        done = Written(root)
        with locked(root):
            changed = [path for path, data in files.items() if not self._same(path, data)]
            done.unchanged = len(files) - len(changed)
            if changed:
                # Plain strings, not Path objects: 3,000 files a full build, and pathlib's
                # parsing was a third of the writing's CPU.
                staging = tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent)
                top, folders = str(root), {str(root)}
                try:
                    # staged flat (one folder to remove afterwards), by position
                    for n, path in enumerate(changed):
                        with open(os.path.join(staging, str(n)), "wb") as handle:
                            handle.write(files[path])
                    for n, path in sorted(enumerate(changed),
                                          key=lambda c: (c[1].endswith(LAST), c[1])):
                        target = os.path.join(top, path)
                        folder = os.path.dirname(target)
                        if folder not in folders:
                            os.makedirs(folder, exist_ok=True)
                            folders.add(folder)
                        os.replace(os.path.join(staging, str(n)), target)
                        self.known[path] = self._wanted.pop(path, "") or digest(files[path])
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
            done.written = sorted(changed)
            self._wanted = {}
            self._last = {path: data for path, data in files.items() if data is not KEEP}
            if frozenset(files) != self._paths:
                done.removed = self._remove_stale(files)
                self._paths = frozenset(files)
        return done

    def _same(self, path: str, data: bytes) -> bool:
        if data is KEEP:  # the builder knows the file there is this page
            return True
        if self._last.get(path) is data:  # the very bytes of the previous build
            return True
        want = self._wanted[path] = digest(data)
        known = self._known(path)
        where = os.path.join(self.directory, path)
        if known is not None:
            return known == want and os.path.exists(where)
        try:
            with open(where, "rb") as handle:
                on_disk = handle.read()
        except OSError:
            return False
        if len(on_disk) != len(data) or digest(on_disk) != want:
            return False
        self.known[path] = want
        return True

    def _remove_stale(self, files: Mapping[str, bytes]) -> list[str]:
        """Incident pages no longer in the build (a language dropped): only those, never
        anything else someone put in the directory."""
        stale = []
        for page in sorted(self.directory.glob("*/incidents/*.html")):
            path = page.relative_to(self.directory).as_posix()
            if path not in files:
                page.unlink()
                self.known.pop(path, None)
                self._stamps.pop(path, None)
                stale.append(path)
        return stale


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    with open(root.parent / f".{root.name}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
