"""Incident pages rendered half in a forked child (incident/page/workers.py): the same bytes
as in one process, and a child that fails or dies only costs time."""

from __future__ import annotations

import os

import pytest
from test_page import _builder, _open_incident, full_incident, setup_site

from cli_fixtures import Workspace
from incident.page import workers


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
