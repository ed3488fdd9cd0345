"""Incident pages rendered half in a forked child (incident/page/workers.py): the same bytes
as in one process, and a child that fails or dies only costs time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from test_page import _builder, _open_incident, full_incident, setup_site

from cli_fixtures import Workspace
from incident.page import workers
from incident.page.cache import BuildCache
from incident.page.site import SiteBuilder
from incident.response import Response
from incident.settings import load_runtime


def test_pages_rendered_in_a_forked_child_are_the_same_bytes(
        sqlite_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = sqlite_ws
    setup_site(ws)
    full_incident(ws)
    for n in range(3):
        _open_incident(ws, f"Open {n}")
    builder, views = _builder(ws)
    alone = builder.build(views)
    forks: list[int] = []
    fork = os.fork

    def counted() -> int:
        pid = fork()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(workers, "SPLIT_AT", 2)
    monkeypatch.setattr(os, "fork", counted)
    split_builder, _ = _builder(ws)
    assert workers.can_fork()
    assert split_builder.build(views) == alone
    assert len(forks) == 1  # 12 pages: 6 of them in the child


@pytest.mark.parametrize("how", ["raises", "dies"])
def test_a_child_that_fails_only_costs_time(how: str) -> None:
    parent = os.getpid()

    def render(job: int) -> bytes:
        if os.getpid() != parent:
            if how == "dies":
                os._exit(9)
            raise RuntimeError("child trouble")
        return f"page {job}".encode()

    jobs = list(range(workers.SPLIT_AT + 1))
    assert workers.render_all(render, jobs) == [f"page {j}".encode() for j in jobs]


def test_a_failure_in_rendering_is_raised_as_in_one_process() -> None:
    def render(job: int) -> bytes:
        if job == workers.SPLIT_AT:  # in the child's half
            raise ValueError("bad template")
        return b"x"

    with pytest.raises(ValueError, match="bad template"):
        workers.render_all(render, list(range(workers.SPLIT_AT + 1)))


def test_the_child_never_reads_the_record(sqlite_ws: Workspace, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Views missing from the cache are read from the record by this process only (the
    child's database connection would be the parent's): the child gives up, the parent
    renders its share, the bytes are the same."""
    ws = sqlite_ws
    setup_site(ws)
    full_incident(ws)
    for n in range(3):
        _open_incident(ws, f"Open {n}")
    page = Response(load_runtime(str(ws.config), db=ws.db)).page
    page.build(str(tmp_path / "site"), publish=False)
    for path in (tmp_path / ".site.cache").glob("*.incident"):
        path.unlink()
    readers = tmp_path / "readers"

    def from_record(iid: str) -> Any:
        with open(readers, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return page._view(iid)

    cache = BuildCache(tmp_path / "site")
    cache.load(from_record)
    views = [view for _seq, _head, view in cache.views.values() if view is not None]
    monkeypatch.setattr(workers, "SPLIT_AT", 2)
    assert workers.can_fork()
    forks: list[int] = []
    fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or fork())
    split = SiteBuilder(page.rt.template_path, page.builder().info).build(views)
    assert forks and set(readers.read_text().split()) == {str(os.getpid())}
    monkeypatch.setattr(workers, "SPLIT_AT", 10**6)
    assert split == SiteBuilder(page.rt.template_path, page.builder().info).build(views)
