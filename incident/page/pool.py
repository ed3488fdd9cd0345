"""Rendering many incident pages on every core: a full build (the first one, or after a
template change) renders three pages per incident, which in one process is most of its time.

The pages are cut into chunks; helper processes (spawned, not forked: the rebuild after a
notice runs in a thread beside the sending) take chunks from the end while this process
renders from the start, taking each chunk no helper has started. Each helper builds its own
SiteBuilder from the same templates and settings, so the bytes are those one process would
write (a helper that finds other templates — changed meanwhile — renders nothing, and its
chunks are rendered here). Few pages, one core, or helpers that cannot start: all here."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from incident.page.model import PublicIncident
    from incident.page.site import SiteBuilder, SiteInfo

POOL_FROM = 300  # pages; below this, starting a helper costs more than it saves
CHUNK = 40  # pages per chunk
Job = tuple["PublicIncident", str]  # an incident, a language

_helper: SiteBuilder | None = None


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def render_pages(jobs: Sequence[Job], render: Callable[[PublicIncident, str], bytes],
                 setup: tuple[Sequence[Path], SiteInfo, str], *,
                 helpers: int | None = None) -> list[bytes]:
    """`render(incident, lang)` of each job, in order; `setup`: the builder's template
    path, settings and fingerprint, from which each helper makes its own builder."""
    helpers = cores() - 1 if helpers is None else helpers
    if len(jobs) < POOL_FROM or helpers < 1:
        return [render(incident, lang) for incident, lang in jobs]
    chunks = [list(jobs[n:n + CHUNK]) for n in range(0, len(jobs), CHUNK)]
    done: list[list[bytes] | None] = [None] * len(chunks)
    try:
        pool = ProcessPoolExecutor(helpers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_helper, initargs=setup)
    except OSError:
        return [render(incident, lang) for incident, lang in jobs]
    with pool:
        # Submitted last chunk first: the helpers work from the end.
        futures: dict[int, Future[list[bytes] | None]] = {
            n: pool.submit(_render_chunk, chunks[n]) for n in reversed(range(len(chunks)))}
        for n, chunk in enumerate(chunks):
            if futures[n].cancel():  # no helper has it yet: render it here
                done[n] = [render(incident, lang) for incident, lang in chunk]
        for n, chunk in enumerate(chunks):
            if done[n] is None:
                done[n] = _result(futures[n]) or [render(incident, lang)
                                                  for incident, lang in chunk]
    return [page for pages in done if pages is not None for page in pages]


def _result(future: Future[list[bytes] | None]) -> list[bytes] | None:
    try:
        return future.result()
    except (BrokenProcessPool, OSError):  # a helper died: render its chunk here
        return None


def _start_helper(template_path: Sequence[Path], info: SiteInfo, fingerprint: str) -> None:
    from incident.page.site import SiteBuilder

    global _helper
    builder = SiteBuilder(template_path, info)
    _helper = builder if builder.fingerprint == fingerprint else None


def _render_chunk(chunk: list[Job]) -> list[bytes] | None:
    if _helper is None:
        return None
    return [_helper.render_incident(incident, lang) for incident, lang in chunk]


__all__ = ["cores", "render_pages"]
