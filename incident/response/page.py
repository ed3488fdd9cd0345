"""The public status page: `incident page build | serve`, and the rebuild (then publish) after
every recorded public notice when `status_page.dir` is set (Journal.announced), in a thread
while the notice is sent."""

from __future__ import annotations

import contextlib
import gc
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import TemplateError

from incident.errors import ConfigInvalid, DeliveryError, IncidentError, TemplateInvalid
from incident.page.cache import BuildCache
from incident.page.model import PublicIncident, public_incident
from incident.page.site import SiteBuilder, SiteInfo
from incident.page.writer import SiteWriter
from incident.privacy import scrub
from incident.response.journal import Journal
from incident.response.results import NoticeResult, Outcome, Result


@dataclass(kw_only=True)
class PageBuilt(Result):
    """What a build wrote, and how its publishing went (None: not run)."""

    directory: Path
    incidents: int
    files: int
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    publish_error: str | None = None
    published: bool = False

    @property
    def outcome(self) -> Outcome:
        return Outcome.ERROR if self.publish_error else Outcome.SUCCESS

    @property
    def problem(self) -> DeliveryError | None:
        if not self.publish_error:
            return None
        return DeliveryError(f"status page built but not published: {self.publish_error}",
                             hint="fix status_page.publish and run: incident page build")


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector paused during a build, then back as it was: a build
    allocates many objects that live on (the cache's views and entries), on which the
    collector would otherwise run full passes that find nothing (~50 ms of a 250 ms rebuild
    at 1,000 incidents, bench/README.md). Paused, not frozen: process-wide, but only for the
    build, and nothing is exempt from later passes (the rebuild after a notice runs in a
    thread beside the sending)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class StatusPage:
    """Builds the site from the record; keeps what it built (the public view of each incident
    by its last event, the pages by incident head, the digests written) for the next build,
    in memory and next to the site (page/cache.py)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.rt = journal.rt
        self._builder: SiteBuilder | None = None
        self._writers: dict[Path, SiteWriter] = {}
        self._caches: dict[Path, BuildCache] = {}
        self._publishing: threading.Thread | None = None
        self._publish_notes: list[str] = []

    def directory(self, given: str | None = None) -> Path:
        """DIR as given, else status_page.dir (ConfigInvalid: neither)."""
        if given:
            return Path(given)
        configured = self.rt.settings.status_page.dir
        if not configured:
            where = str(self.rt.config_path) if self.rt.config_path else "incident.yaml"
            raise ConfigInvalid("no directory given and status_page.dir is not set",
                                field="status_page.dir",
                                hint=f"give DIR, or add status_page: {{dir: status-site}} to "
                                     f"{where}")
        return self.rt.path(configured)

    def build(self, directory: str | None = None, *, publish: bool = True) -> PageBuilt:
        """Write the site into DIR (or status_page.dir), then, building the configured
        directory with status_page.publish set, publish it (when something changed)."""
        with collector_paused():
            built = self._build(directory)
        if publish and not directory and self.rt.settings.status_page.publish:
            built.publish_error = self.publish(built.directory)
            built.published = built.publish_error is None
        return built

    def _build(self, directory: str | None) -> PageBuilt:
        root = self.directory(directory)
        builder = self.builder()
        cache = self._caches.get(root.resolve())
        if cache is None:
            cache = self._caches[root.resolve()] = BuildCache(root)
            if builder.env.bytecode_cache is None:
                builder.env.bytecode_cache = cache.compiled()
            cache.load(self._view)
            if cache.fingerprint == builder.fingerprint:
                for iid, entries in cache.rendered.items():
                    builder.remember(iid, entries)
            cache.rendered = {}
        incidents = self.public_incidents(cache)
        try:
            files = builder.build(incidents, kept=cache.kept(builder.fingerprint))
        except TemplateError as exc:
            where = getattr(exc, "filename", None) or getattr(exc, "name", None) or "page/"
            line = getattr(exc, "lineno", None)
            raise TemplateInvalid(
                f"the status page templates cannot be rendered: {where}"
                + (f":{line}" if line else "") + f": {exc.message or exc}",
                hint="compare templates/page/ with the shipped ones (incident init DIR "
                     "writes a fresh copy); nothing was written") from None
        writer = self._writers.get(root.resolve())
        if writer is None:
            writer = self._writers[root.resolve()] = SiteWriter(root)
            writer.remember(cache.stamps, cache.pages)
        done = writer.write(files)
        # stamped: what was written, and what was found on disk as built without a stamp (a
        # cache lost or from an older version), so that the next process need not read it
        cache.stamps.update(writer.stamps([*done.written, *(p for p in files
                                                             if p not in cache.stamps)]))
        for path in done.removed:
            cache.stamps.pop(path, None)
        cache.fingerprint = builder.fingerprint
        cache.pages = {path: incident.head for incident in incidents
                       for path in builder.incident_pages(incident)}
        cache.save(builder.rendered())
        return PageBuilt(directory=root, incidents=len(incidents), files=len(files),
                         written=done.written, removed=done.removed)

    def builder(self) -> SiteBuilder:
        if self._builder is None:
            s = self.rt.settings
            region = s.region(None)
            self._builder = SiteBuilder(self.rt.template_path, SiteInfo(
                name=s.organisation.name.texts(),
                page_id=s.status_page.page_id, url=s.status_page.url, time_zone=region.zone,
                default_language=s.default_language, days=s.status_page.days,
                zone_labels=dict(region.label) or None))
        return self._builder

    def public_incidents(self, cache: BuildCache | None = None) -> list[PublicIncident]:
        """The public view of every incident (drills left out), reading the events again
        only of those whose last event is not the one `cache` has seen."""
        cache = cache or BuildCache(Path("."))
        store = self.journal.store
        out = []
        for row in store.incidents():
            if row.drill:
                continue
            cached = cache.views.get(row.id)
            if cached is None or cached[:2] != (row.last_seq, row.head_hash):
                events = store.events(row.id)
                head = events[-1].hash if events else ""
                cached = (row.last_seq, head, public_incident(events))
                cache.views[row.id] = cached
            if cached[2] is not None:
                out.append(cached[2])
        return out

    def _view(self, iid: str) -> PublicIncident | None:
        """An incident's public view read from the record."""
        return public_incident(self.journal.store.events(iid))

    # ------------------------------------------------------------------ after a notice

    def after_notice(self, result: NoticeResult) -> None:
        """Rebuild status_page.dir after a recorded public notice, then publish it, in a
        thread: the notice's first messages go out while the page is built (fast response
        first), and `published()` (or the end of the process: the thread is not a daemon)
        waits for it. Trouble is a note `published()` returns, never an error: the notice is
        recorded and goes out regardless."""
        settings = self.rt.settings.status_page
        if not settings.dir or result.view.drill:
            return
        self._wait()  # one rebuild at a time, in the order of the notices
        self._publishing = threading.Thread(target=self._rebuild, name="status-page")
        self._publishing.start()

    def _rebuild(self) -> None:
        try:
            built = self.build(publish=False)
        except (IncidentError, OSError, TemplateError) as exc:
            self._publish_notes.append(f"status page not rebuilt: {scrub(str(exc))}")
            return
        except Exception as exc:  # a bug of the page must never touch the notice
            self._publish_notes.append(f"status page not rebuilt ({type(exc).__name__}): "
                                       f"{scrub(str(exc))[:300]}")
            return
        if self.rt.settings.status_page.publish and (built.written or built.removed):
            error = self.publish(built.directory)
            if error:
                self._publish_notes.append(f"status page not published: {error}")

    def _wait(self) -> None:
        if self._publishing is not None:
            self._publishing.join()
            self._publishing = None

    def published(self) -> list[str]:
        """Wait for the rebuild (and publish) started after a notice; what went wrong
        (empty: nothing)."""
        self._wait()
        notes, self._publish_notes = self._publish_notes, []
        return notes

    def publish(self, root: Path) -> str | None:
        """Run status_page.publish on `root` (no shell, with its timeout); why it failed,
        or None."""
        settings = self.rt.settings.status_page
        command = settings.publish_command(str(root))
        timeout = settings.publish_timeout.total_seconds()
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                 stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            return f"{command[0]} did not finish within {timeout:g}s (status_page.publish_timeout)"
        except OSError as exc:
            return f"cannot run {command[0]}: {exc.strerror or exc}"
        if run.returncode != 0:
            tail = scrub((run.stderr or run.stdout).strip()[-300:])
            return f"{command[0]} exited with code {run.returncode}" + (f": {tail}" if tail
                                                                        else "")
        return None

    # ------------------------------------------------------------------ preview

    def serve(self, *, host: str, port: int, ready: Callable[[str, int], None],
              directory: str | None = None, every: float = 1.0) -> Result:
        """Serve the site on host:port until Ctrl-C or SIGTERM, rebuilding it whenever the
        record changes (the event log's head is polled every `every` seconds)."""
        import asyncio

        from incident.page.server import make_app, serve

        root = self.directory(directory)
        self.build(directory, publish=False)
        seen = [self.journal.store.log_head()]

        def tick() -> None:
            head = self.journal.store.log_head()
            if head != seen[0]:
                self.build(directory, publish=False)
                seen[0] = head

        asyncio.run(serve(make_app(root), host, port, ready, tick=tick, every=every,
                          ticking="status page rebuild"))
        return Result()
