"""Rendering many pages on two cores: half of them in a forked child process, half in this
one (a full build: 3,000 incident pages at 1,000 incidents).

A fork, not a spawned interpreter: the child starts with the templates compiled and the
incidents' views in memory, and re-imports nothing (spawn was measured slower than one
process, bench/README.md). Forked only from the main thread of a process with no other
thread (a fork copies no thread but may copy a lock another one held: the rebuild after a
notice runs beside the sending, so it never forks; it renders a few pages anyway). Anything
wrong with the child (it fails, dies, or sends something else) and this process renders its
share itself: the same bytes, only slower. The child only renders (reading the views of its
incidents from the cache next to the site; never the database: `in_child`) and writes
nothing but its pages to the pipe."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Job = TypeVar("Job")
SPLIT_AT = 200  # fewer pages than this: not worth a process


def can_fork() -> bool:
    return (hasattr(os, "fork") and (os.cpu_count() or 1) > 1
            and threading.current_thread() is threading.main_thread()
            and threading.active_count() == 1)


_in_child = False


def in_child() -> bool:
    """True in the forked child: it must not touch the record (its database connection is
    the parent's); what needs to, fails there and is done by the parent."""
    return _in_child


def render_all(render: Callable[[Job], bytes], jobs: Sequence[Job],
               beside: Callable[[], None] | None = None, share: float = 0.5) -> list[bytes]:
    """[render(job) for job in jobs], a part of them in a forked child when it pays: the
    child renders the last (1 - share) of them while this process runs `beside` (the rest of
    the build), then renders the first `share` of them."""
    if len(jobs) < SPLIT_AT or not can_fork():
        if beside:
            beside()
        return [render(job) for job in jobs]
    import multiprocessing

    half = max(1, min(len(jobs) - 1, int(len(jobs) * share)))
    context = multiprocessing.get_context("fork")
    receiving, sending = context.Pipe(duplex=False)
    try:
        child = context.Process(target=_child, args=(render, jobs[half:], sending),
                                name="incident-page-render", daemon=True)
        # The heap left out of the collector's passes while forking, so that the child's
        # passes do not touch (and copy) every page of it; back as it was at once.
        gc.freeze()
        try:
            child.start()
        finally:
            gc.unfreeze()
    except OSError:  # no process to be had: all here
        receiving.close()
        if beside:
            beside()
        return [render(job) for job in jobs]
    finally:
        sending.close()
    theirs: Any = None
    try:
        if beside:
            beside()
        mine = [render(job) for job in jobs[:half]]
        try:
            theirs = receiving.recv()
        except (EOFError, OSError):  # the child died
            theirs = None
    finally:
        receiving.close()
        child.join()
    if not (isinstance(theirs, list) and len(theirs) == len(jobs) - half
            and all(isinstance(page, bytes) for page in theirs)):
        theirs = [render(job) for job in jobs[half:]]  # raises what the child met, if any
    return mine + theirs


def _child(render: Callable[[Job], bytes], jobs: Sequence[Job], sending: Any) -> None:
    global _in_child
    _in_child = True
    gc.disable()  # short-lived: no pass over the parent's heap (each would copy it)
    try:
        pages: Any = [render(job) for job in jobs]
    except BaseException:  # the parent renders them again and reports
        pages = None
    sending.send(pages)
    sending.close()
