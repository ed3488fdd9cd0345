"""Use cases: start, update, revise ETA, resolve, close, deliver, status, verify.

Each command that changes an incident runs in one write transaction that holds the incident,
re-reads its events, checks the transition against that fresh state, renders the notice for a
sample customer (so a broken template records nothing), enqueues the outbox rows and appends
the event. Sending happens afterwards, from the outbox.

`start` is the exception: its notice is recorded with its first recipients and the rest while
sending (incident/recording.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

from incident.audience import (
    AudienceScan,
    Selection,
    scan_audience,
)
from incident.branches import Branch, load_branches, nearby_open, scope_branches
from incident.cap import Key, Recorded
from incident.channels import Channel
from incident.channels.factory import (
    build_channels,
    check_channels,
    concurrency,
    contact_checks,
)
from incident.checklist import Attention, attention
from incident.controls import one_line, plain
from incident.coordination import Coordination
from incident.delivery import DeliveryPolicy, DeliveryReport, Dispatcher, ProgressFn, Tally
from incident.errors import (
    AudienceInvalid,
    BadInput,
    InvalidTransition,
    InvalidValue,
    Location,
)
from incident.manual import ManualChannelCases, manual_details
from incident.models import OPEN_STATES, Event, EventType, Phase, Status
from incident.notices import (
    WORST_CASE,
    Composer,
    SmsForecast,
    check_templates,
    dkim_signer,
    notice_context,
    rows_for_customers,
    rows_from_notice,
    sender_domain,
)
from incident.parties import (
    INTERNAL_SET,
    check_parties,
    drill_barred,
    internal_contexts,
    party_rows,
    playbook_parties,
)
from incident.playbooks import Playbook, find_playbook, load_playbook
from incident.privacy import mask_reference
from incident.recording import (
    FIRST_ROWS,
    FIRST_SEND_WAIT,
    SENDING_BATCH,
    PendingRows,
    complete_notices,
)
from incident.rendering import INTERNAL_PHASE, Renderer
from incident.settings import Runtime, secret
from incident.state import IncidentView, NoticeResult, apply, fold
from incident.store import Store, deliveries, preview_incident_id
from incident.store import outbox as ob
from incident.store.events import CHAIN_KEY_ENV
from incident.timeutil import format_duration, parse_when, to_iso


@dataclass
class StartResult(NoticeResult):
    """What `start` recorded, plus what the audience file held.

    `pending` holds the notice's rows still to record (None once all are): `deliver_started`
    records them while sending, `finish_start` without; `messages` counts them all.
    """

    audience_path: str = ""
    recipients: int = 0
    skipped_rows: list[tuple[Location, str]] = field(default_factory=list)
    # rows kept without a bad contact: notified on their other channels (the problems)
    partial_rows: list[tuple[Location, str]] = field(default_factory=list)
    unreachable: int = 0  # selected customers with no contact on the notice's channels
    pending: PendingRows | None = None


@dataclass
class DryRunPlan:
    """What `start --dry-run` would send: counts, segments and time at the configured rates."""

    playbook: Playbook
    audience_path: str
    recipients: int
    messages: dict[str, dict[str, int]]  # channel -> language -> messages
    sms: dict[str, dict[str, Any]]  # language -> {encoding, segments, chars, text}
    estimated_seconds: dict[str, float]
    skipped_rows: list[tuple[Location, str]]
    partial_rows: list[tuple[Location, str]] = field(default_factory=list)
    unreachable: int = 0


@dataclass
class StatusResult:
    """An incident's state with its delivery counts and latest permanent failures."""

    view: IncidentView
    counts: dict[str, dict[str, int]]
    failures: list[Any]
    now: datetime
    retrying: list[Any] = field(default_factory=list)
    internal_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # to parties
    attention: list[Attention] = field(default_factory=list)  # what falls due

    @property
    def update_overdue(self) -> bool:
        """The promised next customer update is late."""
        due = self.view.next_update_due
        return due is not None and due < self.now

    @property
    def eta_passed(self) -> bool:
        """The announced ETA has passed while the incident is still open."""
        return self.view.status.is_open and self.view.eta is not None and self.view.eta < self.now


class Service:
    """The toolkit's use cases over one Runtime and database."""

    def __init__(self, rt: Runtime, store: Store | None = None) -> None:
        self.rt = rt
        self._store = store
        self.renderer = Renderer(rt.template_path)
        self.manual = ManualChannelCases(self)
        self.coordination = Coordination(self)
        self.notes: list[str] = []  # what the last use case wants the operator to know

    @property
    def store(self) -> Store:
        """The database, opened (and migrated) on first use."""
        if self._store is None:
            # The chain key is a secret: from the environment only, never in the database.
            self._store = Store.open(self.rt.db_url, chain_key=secret(CHAIN_KEY_ENV),
                                     clock=self.rt.clock)
        return self._store

    def store_if_open(self) -> Store | None:
        """The database if a use case opened it, else None."""
        return self._store

    @property
    def anchored(self) -> bool:
        """Whether the event chain is anchored outside the database (a chain key is set)."""
        return self.store.chain_key is not None

    # ------------------------------------------------------------------ start

    def start(self, *, playbook: str, title: str, severity: str | None = None,
              eta: str | None = None, detected_at: str | None = None,
              affected: Sequence[str] = (), regions: Sequence[str] = (),
              branches: Sequence[str] = (), branch_list: str | None = None,
              audience: str | None = None, drill: bool = False, manual: bool | None = None,
              dry_run: bool = False, queue_only: bool = False,
              warning: dict[str, Any] | None = None) -> StartResult | DryRunPlan:
        """Declare an incident from a playbook and record its first customer notice.

        In the same transaction: the manual channel is opened (unless the playbook or
        `manual=False` says not to), the playbook's parties get the internal notice, and the
        steps those actions complete are marked done. The notice's first rows are recorded
        with it; the result's `pending` rows must then be recorded too (`deliver_started` or
        `finish_start`; see the module docstring). Unless the notice is only queued (or a
        dry run), every channel's configuration is checked first (check_channels). `warning`
        is the CAP alert it is started from (cap.warning_record), recorded so that its updates
        find the incident.
        """
        if not (dry_run or queue_only):
            check_channels(self.rt)
        book = load_playbook(find_playbook(playbook, self.rt.playbook_path))
        now = self.rt.clock.now()
        title = one_line(title)  # it goes into a Subject header and an SMS: one plain line
        if not title:
            raise InvalidValue("--title must not be empty")
        grade = severity or book.severity.default
        levels = [level.id for level in book.severity.levels]
        if grade not in levels:
            raise InvalidValue(f"--severity {grade!r} is not a grade of {book.id}",
                               hint=f"grades: {', '.join(levels)}")
        detected = self._past(detected_at, now, "--detected-at") if detected_at else now
        eta_at = self._future(eta, now, "--eta") if eta else None
        # A dry run reads the recipients too when it forecasts their SMS segments.
        scan, selection = self._audience(book, audience, drill, regions, branches,
                                         spool=not dry_run or "sms" in book.notices.channels)
        try:
            return self._declare(book, scan, selection, now=now, title=title, grade=grade,
                                 detected=detected, eta_at=eta_at, affected=affected,
                                 regions=regions, branches=branches, branch_list=branch_list,
                                 drill=drill, manual=manual, dry_run=dry_run,
                                 warning=warning)
        except BaseException:
            if scan.spool is not None:
                scan.spool.close()
            raise

    def _declare(self, book: Playbook, scan: AudienceScan, selection: Selection, *,
                 now: datetime, title: str, grade: str, detected: datetime,
                 eta_at: datetime | None, affected: Sequence[str], regions: Sequence[str],
                 branches: Sequence[str], branch_list: str | None, drill: bool,
                 manual: bool | None, dry_run: bool,
                 warning: dict[str, Any] | None) -> StartResult | DryRunPlan:
        """`start` once the audience is read: render, check and record (see start())."""
        scope = self._scope(book, regions, branches, branch_list)
        opens_manual = book.principles.minimal_impact.manual_channel.open_at_start
        opens_manual = opens_manual if manual is None else manual
        settings = self.rt.settings
        data: dict[str, Any] = {
            "title": title.strip(), "playbook": book.model_dump(mode="json", by_alias=True),
            "severity": grade, "drill": drill, "detected_at": to_iso(detected),
            "eta": to_iso(eta_at) if eta_at else None,
            "affected": list(affected) or list(book.affected_services),
            "regions": list(regions), "branches_selected": list(branches),
            # What the notice's rows are derived from, so that they can be derived again if
            # recording them is interrupted (complete_notices).
            "audience": {"file": scan.path, "rows": scan.rows_read,
                         "skipped": scan.bad_rows, "selected": scan.selected,
                         "path": str(Path(scan.path).resolve()), "sha256": scan.sha256,
                         "bytes": scan.size, "language": settings.default_language,
                         "phone_region": settings.phone_region,
                         "selection": selection.record(), "recorder": ob.worker_name()},
        }
        if scan.utf8_refusal:  # so that the rows are derived again the same way
            data["audience"]["utf8_refusal"] = scan.utf8_refusal
        if scope:
            data["scope"] = scope
        if warning:
            data["warning"] = warning
        if opens_manual:
            data["manual"] = manual_details(book)
        data["steps_done"] = [s.id for s in book.steps
                              if s.action in ("declare", "notify_customers")
                              or (s.action == "open_manual_channel" and opens_manual)]
        provisional = Event(incident_id=preview_incident_id(now), seq=1,
                            type=EventType.DECLARED, at=now,
                            actor=self.rt.operator, data=data, prev_hash="", hash="")
        view = fold([provisional])
        contexts = self._contexts(view, Phase.INITIAL, "")
        channels = list(book.notices.channels)
        check_templates(self.renderer, book.notices.template_set, channels, contexts,
                        limits=self.rt.settings.limits)
        if "email" in channels:
            dkim_signer(self.rt)  # a DKIM key that cannot sign is refused before recording
        if dry_run:
            return self._plan(book, scan, contexts)
        assert scan.spool is not None
        recipients = iter(scan.spool)
        messages = scan.message_count(channels)
        domain = sender_domain(self.rt)
        transports = settings.channels.transports
        with self.store.write() as conn:
            incident_id = self.store.create_incident(conn, playbook_id=book.id,
                                                     title=data["title"], drill=drill, at=now)
            # The ids in the context are known only now.
            real = provisional.model_copy(update={"incident_id": incident_id})
            view = fold([real])
            data["notice"] = self._notice(book, Phase.INITIAL, self._contexts(view, Phase.INITIAL,
                                                                              ""), messages)
            data["notice"]["recipients"] = scan.selected
            # What its rows are recorded for, also when completed later (complete_notices).
            data["notice"]["transports"] = transports
            recorded = ob.enqueue(conn, rows_for_customers(
                incident_id, 1, islice(recipients, FIRST_ROWS), channels, domain,
                transports=transports, fallback=book.notices.fallback), now=now)
            event = self.store.append(conn, incident_id, EventType.DECLARED,
                                      actor=self.rt.operator, data=data, at=now)
            view = fold([event])
            parties = playbook_parties(self.rt, view)
            internal = 0
            if parties:
                steps = [s.id for s in book.steps if s.action == "notify_parties"]
                internal = self.notify_in(conn, view, parties, kind="declared", message="",
                                          now=now, steps_done=steps)
        pending = PendingRows(self.store, incident_id, recipients, scan.spool,
                              channels=channels, domain=domain, transports=transports,
                              fallback=book.notices.fallback,
                              now=now, recorded=recorded, total=messages)
        return StartResult(incident_id=incident_id, seq=1, phase=Phase.INITIAL,
                           messages=messages, view=view, internal=internal,
                           audience_path=scan.path, recipients=scan.selected,
                           skipped_rows=scan.locations(skipped=True),
                           partial_rows=scan.locations(skipped=False),
                           unreachable=scan.unreachable(channels),
                           pending=None if pending.done else pending)

    def finish_start(self, result: StartResult) -> None:
        """Record the rest of a start's notice now (for `--queue-only`, or after sending
        stopped early); nothing to do once it is complete or was left to `incident deliver`."""
        if result.pending is not None and not result.pending.closed:
            result.pending.finish()
        result.pending = None

    def deliver_started(self, result: StartResult, *,
                        progress: ProgressFn | None = None) -> DeliveryReport:
        """Send a start's notice in the foreground while the rest of its rows are recorded."""
        pending = result.pending
        if pending is None:
            return self.deliver(result.incident_id, progress=progress)
        try:
            return asyncio.run(self._send_while_recording(result.incident_id, pending,
                                                          progress))
        except KeyboardInterrupt:
            # Interrupted twice: stop now; `incident deliver` records the rest (and sends it).
            pending.close()
            raise
        finally:
            self.finish_start(result)

    async def _send_while_recording(self, incident_id: str, pending: PendingRows,
                                    progress: ProgressFn | None) -> DeliveryReport:
        """One event loop: the dispatcher sends what is recorded; between its awaits, a task
        records the next batch of rows (some ms of blocking each, then a pause as long), once
        the first messages have gone, so that recording never delays the first one."""
        composer = Composer(self.rt, self.renderer, {})
        policy = DeliveryPolicy.from_settings(self.rt.settings.delivery, concurrency(self.rt))
        dispatcher = Dispatcher(self.store, composer, build_channels(self.rt), policy=policy,
                                clock=self.rt.clock)
        first_sent = asyncio.Event()
        runs: list[DeliveryReport] = []

        def report(tally: Tally) -> None:
            first_sent.set()
            if progress is not None:  # the runs before this one, plus this one
                progress(Tally(total=tally.total, sent=tally.sent + sum(r.sent for r in runs),
                               failed=tally.failed + sum(r.failed for r in runs),
                               retrying=tally.retrying, started=tally.started))

        async def record() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first_sent.wait(), FIRST_SEND_WAIT)
            while not pending.done:
                began = time.perf_counter()
                pending.step(SENDING_BATCH)
                await asyncio.sleep(time.perf_counter() - began)

        recorder = asyncio.ensure_future(record())
        try:
            while True:
                recorded_all = recorder.done()  # every row (or recording failed: see below)
                runs.append(await dispatcher.run(incident_id=incident_id, progress=report))
                last = runs[-1]
                if recorded_all or last.interrupted or last.fatal:
                    break
                # The dispatcher found nothing due before the next batch was recorded.
                await asyncio.wait([recorder], timeout=0.05)
        finally:
            await recorder  # the rest of the notice is recorded even when sending stopped
        return DeliveryReport(sent=sum(r.sent for r in runs), failed=sum(r.failed for r in runs),
                              pending=last.pending, interrupted=last.interrupted,
                              counts=last.counts, elapsed=sum(r.elapsed for r in runs),
                              fatal=last.fatal, fallbacks=dispatcher.fallbacks,
                              waiting=last.waiting, transports=last.transports)

    def _audience(self, book: Playbook, given: str | None, drill: bool,
                  regions: Sequence[str], branches: Sequence[str] = (), *,
                  spool: bool = True) -> tuple[AudienceScan, Selection]:
        """Read, validate and select the audience (one pass; see scan_audience)."""
        settings = self.rt.settings
        if given:
            path = Path(given)
        elif drill:
            if "drill" not in settings.audiences:
                raise BadInput("a drill needs a drill audience",
                               hint="add audiences: {drill: drill.csv} to incident.yaml, "
                                    "or give --audience")
            path = self.rt.path(settings.audiences["drill"])
        else:
            path = self.rt.path(settings.audiences[settings.default_audience])
        wanted = book.audience
        # --region and --branch name the affected places: a customer of any of them; a drill
        # audience is staff: everyone in it.
        selection = Selection.of(products=wanted.products, regions=wanted.regions,
                                 branches=wanted.branches, segments=wanted.segments,
                                 place_regions=regions, place_branches=branches,
                                 everyone=drill and not given)
        scan = scan_audience(path, selection, default_language=settings.default_language,
                             default_region=settings.phone_region, spool=spool,
                             checks=contact_checks(self.rt),
                             refuse_utf8=self._utf8_refusal(book))
        if not scan.selected:
            if scan.spool is not None:
                scan.spool.close()
            where = [f"--region {', '.join(regions)}"] if regions else []
            where += [f"--branch {', '.join(branches)}"] if branches else []
            raise AudienceInvalid(
                f"no customer in {path} matches the playbook's audience filter"
                + (f" and {' / '.join(where)}" if where else ""),
                problems=[(Location(str(path)), f"{scan.valid} valid rows, 0 selected")],
                hint="check --region and the playbook's audience: section")
        return scan, selection

    def _utf8_refusal(self, book: Playbook) -> Callable[[], str | None] | None:
        """How the audience learns whether addresses with a non-ASCII local part can be sent
        (they need the relay's SMTPUTF8): asked at the first such address, before anything is
        recorded; None when they always can (the file transport writes RFC 6532 messages)."""
        email = self.rt.settings.channels.email
        smtp = email.smtp
        if ("email" not in book.notices.channels or email.transport != "smtp" or smtp is None
                or smtp.smtputf8 is True):
            return None
        if smtp.smtputf8 is False:
            return lambda: "channels.email.smtp.smtputf8 is false"
        from incident.channels.email import smtputf8_refusal

        return lambda: smtputf8_refusal(smtp)

    def _scope(self, book: Playbook, regions: Sequence[str], branch_ids: Sequence[str],
               given: str | None) -> dict[str, Any] | None:
        """The branches closed by the incident and open ones nearby, from the branch list."""
        if not (regions or branch_ids) or not book.branches.announce:
            return None
        listed = given or self.rt.settings.branches
        if not listed:
            if not branch_ids:
                return None
            return {"file": None, "open": [],
                    "closed": [{"id": b, "name": b, "name_en": b, "region": ""}
                               for b in branch_ids]}
        path = Path(given) if given else self.rt.path(listed)
        known = load_branches(path)
        closed = scope_branches(known, regions=regions, branch_ids=branch_ids)
        near = nearby_open(closed, known, within_km=book.branches.nearby_km,
                           limit=book.branches.nearby_max)
        return {"file": str(path),
                "closed": [_branch(b) for b in closed],
                "open": [{**_branch(b), "distance_km": km} for b, km in near]}

    def _plan(self, book: Playbook, scan: AudienceScan,
              contexts: dict[str, dict[str, Any]]) -> DryRunPlan:
        """Counts, and the SMS segments of each recipient's message as it would be rendered
        (their name, the real id's length), hence the time to send them at the rate."""
        messages = scan.messages(book.notices.channels)
        forecast = SmsForecast(self.renderer, book.notices.template_set, "initial", contexts)
        if scan.spool is not None:
            try:
                for recipient in scan.spool:
                    if recipient.phone:
                        forecast.add(recipient.language, recipient.name, recipient.ref)
            finally:
                scan.spool.close()
        sms: dict[str, dict[str, Any]] = {}
        for lang, counts in forecast.segments.items():
            longest = forecast.longest[lang]
            sms[lang] = {"encoding": longest.encoding, "segments": max(counts),
                         "units": longest.units, "messages": dict(sorted(counts.items())),
                         "text": forecast.text(lang, "{customer.name}", "{customer.ref}")}
        channels = self.rt.settings.channels
        estimate = {"email": sum(messages.get("email", {}).values()) / channels.email.rate,
                    "sms": forecast.total() / channels.sms.rate}
        return DryRunPlan(playbook=book, audience_path=scan.path, recipients=scan.selected,
                          messages=messages, sms=sms, estimated_seconds=estimate,
                          skipped_rows=scan.locations(skipped=True),
                          partial_rows=scan.locations(skipped=False),
                          unreachable=scan.unreachable(book.notices.channels))

    # ------------------------------------------------------------------ later notices

    def update(self, ref: str, *, message: str, message_zh: str | None = None,
               eta: str | None = None, status: str | None = None, severity: str | None = None,
               internal: bool = False, to: Sequence[str] = (),
               queue_only: bool = False,
               warning: dict[str, Any] | None = None) -> NoticeResult:
        """Record a progress update (`warning`: the CAP Update it comes from).

        Customers get an update notice unless `internal`. Parties: those named in `to`; with
        `internal` and no `to`, all the playbook's parties; a new `severity` (re-grade) is
        announced to all of them.
        """
        message, message_zh = plain(message), plain(message_zh or "") or None
        if not message:
            raise InvalidValue("--message must not be empty")
        targets = check_parties(self.rt, to)
        new_status = None
        if status:
            try:
                new_status = Status(status)
            except ValueError:
                raise InvalidValue(f"--status {status!r} is not one of "
                                   "investigating, identified, monitoring") from None
            if new_status not in OPEN_STATES:
                command = "resolve" if new_status is Status.RESOLVED else "close"
                raise InvalidTransition(f"--status {status} is not an update: "
                                        f"use `incident {command}`")

        def build(view: IncidentView, now: datetime) -> dict[str, Any]:
            data: dict[str, Any] = {"message": message.strip(), "internal": internal}
            if message_zh:
                data["message_zh"] = message_zh.strip()
            if warning:
                data["warning"] = warning
            if new_status and new_status != view.status:
                data["status"] = new_status.value
            if eta:
                data["eta"] = to_iso(self._future(eta, now, "--eta"))
            if severity and severity != view.severity:
                levels = [level.id for level in view.playbook.severity.levels]
                if severity not in levels:
                    raise InvalidValue(f"--severity {severity!r} is not a grade of "
                                       f"{view.playbook.id}", hint=f"grades: {', '.join(levels)}")
                data["severity"] = severity
                data["previous_severity"] = view.severity
            if targets:
                barred = [p for p in targets if p in drill_barred(view)]
                if barred:
                    raise InvalidValue(f"--to {', '.join(barred)}: {view.id} is a drill, and "
                                       "a drill never reaches the regulator",
                                       hint="leave the regulator out of drills")
                data["to"] = targets
            return data

        def notify(view: IncidentView, data: dict[str, Any]) -> tuple[list[str], str] | None:
            if data.get("severity"):
                everyone = playbook_parties(self.rt, view)
                return list(dict.fromkeys([*everyone, *targets])), "regraded"
            if targets:
                return targets, "update"
            if internal:
                return playbook_parties(self.rt, view), "update"
            return None

        return self.record(ref, EventType.UPDATED, None if internal else Phase.UPDATE, build,
                           allowed=OPEN_STATES, verb="update", notify=notify,
                           sends=not queue_only)

    def revise_eta(self, ref: str, *, when: str, reason: str,
                   queue_only: bool = False) -> NoticeResult:
        """Announce a changed estimated recovery time, with the reason."""
        reason = plain(reason)
        if not reason:
            raise InvalidValue("--reason must not be empty: customers are told why the ETA moved")

        def build(view: IncidentView, now: datetime) -> dict[str, Any]:
            new = self._future(when, now, "WHEN")
            return {"eta": to_iso(new), "previous": to_iso(view.eta) if view.eta else None,
                    "reason": reason.strip(), "message": reason.strip()}

        return self.record(ref, EventType.ETA_REVISED, Phase.ETA_CHANGED, build,
                           allowed=OPEN_STATES, verb="revise the ETA of",
                           notify=self._everyone("eta_changed"), sends=not queue_only)

    def resolve(self, ref: str, *, message: str, message_zh: str | None = None,
                at: str | None = None, queue_only: bool = False) -> NoticeResult:
        """Declare service restored and send the recovery notice that closes the loop."""
        message, message_zh = plain(message), plain(message_zh or "") or None
        if not message:
            raise InvalidValue("--message must not be empty")

        def build(view: IncidentView, now: datetime) -> dict[str, Any]:
            when = self._past(at, now, "--at") if at else now
            if when < view.detected_at:
                raise InvalidValue(f"--at {at!r} is before the incident was detected")
            data: dict[str, Any] = {"message": message.strip(), "resolved_at": to_iso(when)}
            if message_zh:
                data["message_zh"] = message_zh.strip()
            return data

        return self.record(ref, EventType.RESOLVED, Phase.RESOLVED, build,
                           allowed=OPEN_STATES, verb="resolve",
                           notify=self._everyone("resolved"), sends=not queue_only)

    def close(self, ref: str, *, force: bool = False, reason: str | None = None) -> NoticeResult:
        """Close a resolved incident; its record is then final.

        Refused while manual cases are unreconciled, unless forced with a reason (recorded).
        """
        if force and not (reason and reason.strip()):
            raise InvalidValue("--force needs --reason: why close with cases unreconciled")

        def build(view: IncidentView, now: datetime) -> dict[str, Any]:
            open_cases = view.unreconciled
            if open_cases and not force:
                raise InvalidTransition(
                    f"cannot close {view.id}: {len(open_cases)} manual case(s) not reconciled",
                    problems=[(Location(field=c.id), f"customer {mask_reference(c.customer)}: "
                                                     f"{c.request}") for c in open_cases],
                    hint=f"reconcile them (incident manual reconcile {view.id[-6:]} CASE), or "
                         "close with --force --reason \"...\"")
            if force and open_cases:
                return {"forced": True, "reason": (reason or "").strip(),
                        "unreconciled": [c.id for c in open_cases]}
            return {}

        return self.record(ref, EventType.CLOSED, None, build, allowed={Status.RESOLVED},
                           verb="close")

    def _everyone(self, kind: str) -> Notify:
        def notify(view: IncidentView, data: dict[str, Any]) -> tuple[list[str], str] | None:
            parties = playbook_parties(self.rt, view)
            return (parties, kind) if parties else None
        return notify

    def record(self, ref: str, type: EventType, phase: Phase | None,
               build: Any, *, allowed: set[Status] | frozenset[Status] | None = None,
               verb: str, notify: Notify | None = None, sends: bool = False) -> NoticeResult:
        """Append one event of `type` to incident `ref` in one write transaction.

        `build(view, now)` returns the event's data from the incident's fresh state (raising
        BadInput to refuse); with a `phase`, the customer notice is rendered, checked and
        enqueued with it. `allowed` are the states the incident may be in (None: any but
        closed). `notify(view, data)` may name parties (and the kind of internal notice) that
        get an internal notice about the event, recorded in the same transaction. With `sends`
        (what it records is sent at once), every channel's configuration is checked first.
        """
        if sends:
            check_channels(self.rt)
        allowed = allowed if allowed is not None else frozenset(Status) - {Status.CLOSED}
        incident_id = self.store.resolve_id(ref)
        if phase is not None:  # a later notice copies the first one's rows: complete them
            self.notes = self.complete_notices(incident_id, strict=True)
        now = self.rt.clock.now()
        domain = sender_domain(self.rt)
        self.store.record_tampering(incident_id, actor=self.rt.operator, at=now)
        with self.store.write() as conn:
            self.store.lock_incident(conn, incident_id)
            events = self.store.events(incident_id, conn)
            seq = len(events) + 1
            view = fold(events)
            if view.status not in allowed:
                raise InvalidTransition(
                    f"cannot {verb} {incident_id}: it is {view.status.value}",
                    hint=_transition_hint(view.status))
            data = build(view, now)
            messages = 0
            if phase is not None:
                book = view.playbook
                provisional = Event(incident_id=incident_id, seq=seq, type=type, at=now,
                                    actor=self.rt.operator,
                                    data={**data, "notice": _placeholder(phase)},
                                    prev_hash="", hash="")
                after = deepcopy(view)
                apply(after, provisional)
                contexts = self._contexts(after, phase, data.get("message", ""),
                                          data.get("message_zh"))
                check_templates(self.renderer, book.notices.template_set,
                                list(book.notices.channels), contexts,
                                limits=self.rt.settings.limits)
                first = view.notices[0].seq if view.notices else 1
                messages = ob.enqueue(conn, rows_from_notice(
                    conn, incident_id, first, seq, domain,
                    transports=self.rt.settings.channels.transports), now=now)
                data["notice"] = self._notice(book, phase, contexts, messages)
                data["notice"]["recipients"] = view.notices[0].recipients if view.notices else 0
            event = self.store.append(conn, incident_id, type, actor=self.rt.operator,
                                      data=data, at=now)
            apply(view, event)
            internal = notify(view, data) if notify else None
            internal_messages = 0
            if internal and internal[0]:
                internal_messages = self.notify_in(conn, view, internal[0], kind=internal[1],
                                                   message=data.get("message", ""), now=now)
        return NoticeResult(incident_id=incident_id, seq=event.seq, phase=phase,
                            messages=messages, view=view, internal=internal_messages)

    def notify_in(self, conn: Any, view: IncidentView, parties: Sequence[str], *, kind: str,
                  message: str, now: datetime, steps_done: Sequence[str] = ()) -> int:
        """Record an internal notice to `parties` in the open transaction `conn`, after the
        events already applied to `view`; returns the number of messages enqueued.

        A drill never reaches the parties that receive regulator reports, whichever path
        names them (playbook, step, `--to`, alerts): they are dropped here.
        """
        barred = drill_barred(view)
        parties = [p for p in parties if p not in barred]
        if not parties:
            return 0
        contexts = internal_contexts(self.rt, view, kind=kind, message=message, now=now,
                                     actor=self.rt.operator)
        check_templates(self.renderer, INTERNAL_SET, ["email", "sms"], contexts,
                        limits=self.rt.settings.limits)
        seq = view.event_count + 1
        messages = ob.enqueue(conn, party_rows(self.rt, view.id, seq, parties,
                                               sender_domain(self.rt)), now=now)
        data = {"parties": list(parties), "kind": kind, "message": message,
                "steps_done": [s for s in steps_done if not view.step_marks.get(s)],
                "notice": {"phase": INTERNAL_PHASE, "template_set": INTERNAL_SET,
                           "channels": ["email", "sms"], "context": contexts,
                           "messages": messages, "recipients": len(parties),
                           "audience": "internal"}}
        event = self.store.append(conn, view.id, EventType.PARTIES_NOTIFIED,
                                  actor=self.rt.operator, data=data, at=now)
        apply(view, event)
        return messages

    def _contexts(self, view: IncidentView, phase: Phase, message: str,
                  message_zh: str | None = None) -> dict[str, dict[str, Any]]:
        return {lang: notice_context(self.rt, view, phase=phase, lang=lang,
                                     message=(message_zh if lang == "zh-CN" and message_zh
                                              else message))
                for lang in self.rt.settings.languages}

    @staticmethod
    def _notice(book: Playbook, phase: Phase, contexts: dict[str, dict[str, Any]],
                messages: int) -> dict[str, Any]:
        return {"phase": phase.value, "template_set": book.notices.template_set,
                "channels": list(book.notices.channels), "context": contexts,
                "messages": messages, "recipients": 0}

    def _future(self, text: str, now: datetime, option: str) -> datetime:
        """An ETA: after now, and at most `limits.max_eta` ahead."""
        value = parse_when(text, zone=self.rt.zone, now=now, future=True)
        if value <= now:
            raise InvalidValue(f"{option} {text!r} is not in the future")
        bound = self.rt.settings.limits.max_eta
        if value - now > bound:
            raise InvalidValue(f"{option} {text!r} is more than {format_duration(bound)} ahead",
                               hint="give a nearer estimate and revise it with incident eta "
                                    "(the bound is limits.max_eta in incident.yaml)")
        return value

    def _past(self, text: str, now: datetime, option: str) -> datetime:
        """A time that already happened (detection, recovery): not after now (a minute of
        clock skew allowed), at most `limits.max_backdate` ago."""
        value = parse_when(text, zone=self.rt.zone, now=now, future=False)
        if value > now + timedelta(minutes=1):
            raise InvalidValue(f"{option} {text!r} is in the future")
        bound = self.rt.settings.limits.max_backdate
        if now - value > bound:
            raise InvalidValue(f"{option} {text!r} is more than {format_duration(bound)} ago",
                               hint="the bound is limits.max_backdate in incident.yaml")
        return value

    # ------------------------------------------------------------------ reading

    def view(self, ref: str) -> IncidentView:
        """The current state of one incident."""
        return fold(self.store.events(self.store.resolve_id(ref)))

    def status(self, ref: str) -> StatusResult:
        """State, ETA, cadence, delivery counts and recent failures of one incident."""
        view = self.view(ref)
        with self.store.read() as conn:
            counts = deliveries.counts(conn, view.id)
            internal = deliveries.counts(conn, view.id, parties=True)
            failures = deliveries.failures(conn, view.id, limit=10)
            retrying = deliveries.retrying(conn, view.id)
        now = self.rt.clock.now()
        return StatusResult(view=view, counts=counts, failures=failures, now=now,
                            retrying=retrying, internal_counts=internal,
                            attention=attention(view, now, self.rt.settings.alerts.due_soon))

    def incidents(self, *, include_closed: bool = False) -> list[StatusResult]:
        """Open incidents (or all), newest first, each with its delivery counts."""
        out = []
        rows = self.store.incidents()
        with self.store.read() as conn:
            all_counts = {row.id: deliveries.counts(conn, row.id) for row in rows}
        now = self.rt.clock.now()
        for row in rows:
            view = fold(self.store.events(row.id))
            if include_closed or view.status is not Status.CLOSED:
                out.append(StatusResult(view=view, counts=all_counts.get(row.id, {}),
                                        failures=[], now=now))
        return out

    def recorded_warnings(self) -> dict[Key, Recorded]:
        """The CAP alerts recorded on incidents (and those they reference), by (sender,
        identifier): what a new alert updates, cancels or repeats."""
        found: dict[Key, Recorded] = {}
        for result in self.incidents(include_closed=True):  # newest first: it wins
            view = result.view
            for key in view.warning_keys:
                found.setdefault(key, Recorded(
                    incident_id=view.id, is_open=view.status.is_open,
                    status=view.status.value, playbook=view.playbook, severity=view.severity))
        return found

    def timeline(self, ref: str) -> tuple[IncidentView, list[Event]]:
        """Every event of an incident, in order."""
        incident_id = self.store.resolve_id(ref)
        events = self.store.events(incident_id)
        return fold(events), events

    def verify(self, ref: str | None = None) -> dict[str, list[str]]:
        """Recompute the event chain of one incident or of all; problems by incident."""
        ids = [self.store.resolve_id(ref)] if ref else [r.id for r in self.store.incidents()]
        return {incident_id: self.store.verify(incident_id) for incident_id in ids}

    # ------------------------------------------------------------------ delivery

    def reroute(self, ref: str | None = None) -> list[Event]:
        """Move the pending messages of one incident (or of all) recorded for another
        transport onto this config's, one DELIVERY_REROUTED event per incident in the same
        transaction: the supervisor's explicit decision, on the record."""
        transports = self.rt.settings.channels.transports
        incident_id = self.store.resolve_id(ref) if ref else None
        with self.store.read() as conn:
            ids = deliveries.foreign_incidents(conn, transports, incident_id)
        events = []
        for each in ids:
            with self.store.write() as conn:
                self.store.lock_incident(conn, each)
                moved = {channel: found for channel, transport in transports.items()
                         if (found := ob.reroute(conn, each, channel, transport))}
                if moved:
                    events.append(self.store.append(
                        conn, each, EventType.DELIVERY_REROUTED, actor=self.rt.operator,
                        data={"moved": moved, "to": transports}, at=self.rt.clock.now()))
        return events

    def reached_parties(self, incident_id: str, notice_seq: int) -> set[str]:
        """The parties an internal notice reached so far (a message accepted)."""
        with self.store.read() as conn:
            return deliveries.reached_parties(conn, incident_id, notice_seq)

    def check_channels(self) -> None:
        """ConfigInvalid unless every configured channel has what it needs (its secrets)."""
        check_channels(self.rt)

    def deliver(self, ref: str | None = None, *, progress: ProgressFn | None = None,
                policy: DeliveryPolicy | None = None,
                channels: dict[str, Channel] | None = None,
                complete: bool = True) -> DeliveryReport:
        """Send what is pending (for one incident or all), resuming after any crash; first
        (unless the caller just did, `complete=False`) completing interrupted notices."""
        incident_id = self.store.resolve_id(ref) if ref else None
        self.notes = self.complete_notices(incident_id) if complete else []
        composer = Composer(self.rt, self.renderer, {})
        policy = policy or DeliveryPolicy.from_settings(self.rt.settings.delivery,
                                                        concurrency(self.rt))
        dispatcher = Dispatcher(self.store, composer, channels or build_channels(self.rt),
                                policy=policy, clock=self.rt.clock)
        return asyncio.run(dispatcher.run(incident_id=incident_id, progress=progress))

    def complete_notices(self, incident_id: str | None = None, *,
                         strict: bool = False) -> list[str]:
        """Record the missing rows of first notices whose recording stopped (see
        incident/recording.py); what the operator should know."""
        return complete_notices(self.store, self.rt, incident_id, strict=strict)

    def failed_deliveries(self, ref: str) -> list[Any]:
        """Every permanently failed delivery of an incident."""
        with self.store.read() as conn:
            return deliveries.failures(conn, self.store.resolve_id(ref))


Notify = Callable[[IncidentView, dict[str, Any]], "tuple[list[str], str] | None"]


def _branch(branch: Branch) -> dict[str, Any]:
    return {"id": branch.id, "name": branch.name, "name_en": branch.name_en,
            "region": branch.region}


def _placeholder(phase: Phase) -> dict[str, Any]:
    return {"phase": phase.value, "messages": 0, "recipients": 0}


def _transition_hint(status: Status) -> str:
    if status is Status.RESOLVED:
        return "it is resolved: the next step is `incident close ID`"
    if status is Status.CLOSED:
        return "it is closed: its record is final; start a new incident if the problem is back"
    return "it is still open: resolve it first with `incident resolve ID --message ...`"


# ---------------------------------------------------------------------- playbook checks


@dataclass
class PlaybookCheck:
    """The result of validating one playbook file and rendering all its notices."""

    path: str
    playbook: Playbook | None
    problems: list[tuple[Location, str]]
    sms: dict[str, dict[str, int | float | str]]  # "phase/lang" -> encoding, units, segments, …


def sample_view(playbook: Playbook, phase: Phase, *, now: datetime,
                title: str = "Sample: service disruption",
                reason: str = "Data checks take longer") -> IncidentView:
    """A plausible incident at `phase`, to render templates with sample data."""
    data = {"title": title, "severity": playbook.severity.default,
            "playbook": playbook.model_dump(mode="json", by_alias=True), "drill": False,
            "detected_at": to_iso(now - timedelta(minutes=20)),
            "eta": to_iso(now + timedelta(hours=2)), "affected": playbook.affected_services,
            "regions": ["guangdong"], "audience": {}}
    events = [Event(incident_id="INC-20261124-A1B2C3", seq=1, type=EventType.DECLARED, at=now,
                    actor="sample", data=data, prev_hash="", hash="")]
    if phase is Phase.ETA_CHANGED:
        events.append(events[0].model_copy(update={
            "seq": 2, "type": EventType.ETA_REVISED,
            "data": {"eta": to_iso(now + timedelta(hours=3)),
                     "reason": reason}}))
    if phase is Phase.RESOLVED:
        events.append(events[0].model_copy(update={
            "seq": 2, "type": EventType.RESOLVED,
            "data": {"resolved_at": to_iso(now + timedelta(hours=1)), "message": "Restored"}}))
    return fold(events)


def check_playbook(rt: Runtime, renderer: Renderer, path: Path) -> PlaybookCheck:
    """Validate one playbook and render every phase × channel × language with sample data."""
    from incident.errors import PlaybookInvalid, PlaybookNotFound
    from incident.notices import SAMPLE_CUSTOMER, SAMPLE_MESSAGE

    try:
        book = load_playbook(path)
    except (PlaybookInvalid, PlaybookNotFound) as exc:
        return PlaybookCheck(str(path), None, [(Location(str(path)), exc.message), *exc.problems],
                             {})
    problems: list[tuple[Location, str]] = []
    sms: dict[str, dict[str, int | float | str]] = {}
    now = rt.clock.now()
    for phase in book.notices.phases:
        view = sample_view(book, phase, now=now)
        for lang in rt.settings.languages:
            context = {**notice_context(rt, view, phase=phase, lang=lang,
                                        message=SAMPLE_MESSAGE[lang]),
                       "customer": SAMPLE_CUSTOMER[lang]}
            problems += renderer.check(book.notices.template_set, [phase.value],
                                       book.notices.channels, [lang], context)
            if "sms" in book.notices.channels and not problems:
                sms[f"{phase.value}/{lang}"] = _worst_sms(rt, renderer, book, phase, lang, now)
    return PlaybookCheck(str(path), book, list(dict.fromkeys(problems)), sms)


def _worst_sms(rt: Runtime, renderer: Renderer, book: Playbook, phase: Phase, lang: str,
               now: datetime) -> dict[str, int | float | str]:
    """The SMS of `phase` with every variable value at its longest (notices.WORST_CASE), and
    the seconds 1,000 of them take at the configured rate."""
    worst = WORST_CASE[lang]
    view = sample_view(book, phase, now=now, title=worst["title"], reason=worst["reason"])
    context = {**notice_context(rt, view, phase=phase, lang=lang, message=worst["message"]),
               "customer": {"name": worst["name"], "ref": worst["ref"]}}
    info = renderer.render_sms(book.notices.template_set, phase.value, lang, context).info
    return {"encoding": info.encoding, "units": info.units, "segments": info.segments,
            "seconds_per_1000": round(1000 * info.segments / rt.settings.channels.sms.rate, 1)}
