"""Declaring an incident: the playbook, the audience read, the first customer notice.

`start` checks what it is given, reads the customer list in one streaming pass — all of it,
or for a plain CSV file only up to its first recipients, the rest being read while sending
(read_audience in response/recording.py) — renders the notice for a sample customer in every
language, then records the incident, its declared event with the notice's first rows, and the
internal notice to the playbook's parties in one transaction; the notice's other rows (and,
read early, the audience's exact counts) are recorded while sending (response/recording.py,
response/sending.py). A dry run reads the whole list and stops before recording, forecasting
what would be sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

from incident.audience import (
    AudienceScan,
    QuerySource,
    Selection,
    configured_audience,
    given_audience,
)
from incident.branches import Branch, load_branches, nearby_open, scope_branches
from incident.channels.factory import contact_checks
from incident.channels.twiml import call_seconds, calling_seconds
from incident.composer import dkim_signer
from incident.controls import one_line
from incident.errors import AudienceInvalid, BadInput, InvalidValue, Location
from incident.manual import manual_details
from incident.models import Event, EventType, Phase
from incident.notices import (
    SAMPLE_CUSTOMER,
    SmsForecast,
    check_templates,
    rows_for_customers,
    sender_domain,
)
from incident.parties import playbook_parties
from incident.payloads import Declared, payload_data
from incident.playbooks import Playbook, find_playbook, load_playbook
from incident.privacy import mask_reference
from incident.response.journal import Journal, notice_record
from incident.response.recording import FIRST_ROWS, EarlyRead, PendingRows, read_audience
from incident.response.results import DryRunPlan, StartResult
from incident.state import fold
from incident.store import outbox as ob
from incident.store import preview_incident_id
from incident.timeutil import to_iso


class Declaration:
    """The `start` use case over the journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.rt = journal.rt

    def start(self, *, playbook: str, title: str, title_zh: str | None = None,
              title_zh_hk: str | None = None, severity: str | None = None,
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
        with it; the result's `pending` rows must then be recorded too (`Sending.send`, or
        `Sending.finish_start`; see response/recording.py). Unless the notice is only queued (or a
        dry run), every channel's configuration is checked first (check_channels). `warning`
        is the CAP alert it is started from (cap.warning_record), recorded so that its updates
        find the incident.
        """
        if not (dry_run or queue_only):
            self.journal.check_channels()
        book = load_playbook(find_playbook(playbook, self.rt.playbook_path))
        now = self.rt.clock.now()
        title = one_line(title)  # it goes into a Subject header and an SMS: one plain line
        if not title:
            raise InvalidValue("must not be empty", field="title")
        grade = severity or book.severity.default
        levels = [level.id for level in book.severity.levels]
        if grade not in levels:
            raise InvalidValue(f"{grade!r} is not a grade of {book.id}", field="severity",
                               hint=f"grades: {', '.join(levels)}")
        detected = self.journal.past(detected_at, now, "detected_at") if detected_at else now
        eta_at = self.journal.future(eta, now, "eta") if eta else None
        # A dry run reads the recipients too when it forecasts their SMS segments. Recorded
        # early only when this process sends: queued, the file is read whole first, since its
        # rows are then recorded in batches of 100,000 that would otherwise live beside the
        # read's own tables (`start --queue-only` of 10^6 customers: 234 MB against 163 MB).
        scan, selection, source, early = self._audience(
            book, audience, drill, regions, branches,
            spool=not dry_run or "sms" in book.notices.channels,
            early=not (dry_run or queue_only))
        try:
            titles = {"title": title.strip(), **chinese_titles(title_zh, title_zh_hk)}
            declared = self._declare(book, scan, selection, source, now=now, titles=titles,
                                     grade=grade, detected=detected, eta_at=eta_at,
                                     affected=affected, regions=regions, branches=branches,
                                     branch_list=branch_list, drill=drill, manual=manual,
                                     dry_run=dry_run, warning=warning, early=early)
        except BaseException:
            if scan.spool is not None:
                scan.spool.close()
            if early is not None:
                early.scanner.close()
            raise
        if isinstance(declared, StartResult):
            self.journal.announced(declared)
        return declared

    def _declare(self, book: Playbook, scan: AudienceScan, selection: Selection,
                 source: Path | QuerySource, *,
                 now: datetime, titles: dict[str, str], grade: str, detected: datetime,
                 eta_at: datetime | None, affected: Sequence[str], regions: Sequence[str],
                 branches: Sequence[str], branch_list: str | None, drill: bool,
                 manual: bool | None, dry_run: bool, warning: dict[str, Any] | None,
                 early: EarlyRead | None = None) -> StartResult | DryRunPlan:
        """`start` once the audience is read (or, `early`, its first recipients: the rest is
        read while sending, see response/recording.py): render, check and record."""
        scope = self._scope(book, regions, branches, branch_list)
        opens_manual = book.principles.minimal_impact.manual_channel.open_at_start
        opens_manual = opens_manual if manual is None else manual
        settings = self.rt.settings
        data: dict[str, Any] = {
            **titles, "playbook": book.model_dump(mode="json", by_alias=True),
            "severity": grade, "drill": drill, "detected_at": to_iso(detected),
            "eta": to_iso(eta_at) if eta_at else None,
            "affected": list(affected) or list(book.affected_services),
            "regions": list(regions), "branches_selected": list(branches),
            # What the notice's rows are derived from, so that they can be derived again if
            # recording them is interrupted (complete_notices).
            "audience": {"file": scan.path, "rows": scan.rows_read,
                         "skipped": scan.bad_rows, "selected": scan.selected,
                         **_source_record(source), "sha256": scan.sha256,
                         "bytes": scan.size, "language": settings.default_language,
                         "phone_region": settings.phone_region,
                         "selection": selection.record(), "recorder": ob.worker_name()},
        }
        if scan.utf8_refusal:  # so that the rows are derived again the same way
            data["audience"]["utf8_refusal"] = scan.utf8_refusal
        if early is not None:  # the counts so far: the exact ones come with the last rows
            data["audience"]["counts"] = "pending"
        if scope:
            data["scope"] = scope
        if warning:
            data["warning"] = warning
        if opens_manual:
            data["manual"] = manual_details(book)
        data["steps_done"] = [s.id for s in book.steps
                              if s.action in ("declare", "notify_customers")
                              or (s.action == "open_manual_channel" and opens_manual)]
        declared = Declared(**data)  # refused here (RecordInvalid) if a key is wrong
        provisional = Event(incident_id=preview_incident_id(now), seq=1,
                            type=EventType.DECLARED, at=now, actor=self.rt.operator,
                            data=payload_data(declared), prev_hash="", hash="")
        view = fold([provisional])
        contexts = self.journal.contexts(view, Phase.INITIAL, "")
        channels = list(book.notices.channels)
        check_templates(self.journal.renderer, book.notices.template_set, channels, contexts,
                        limits=self.rt.settings.limits)
        if "email" in channels:
            dkim_signer(self.rt)  # a DKIM key that cannot sign is refused before recording
        if dry_run:
            return self._plan(book, scan, contexts)
        if early is None:
            assert scan.spool is not None
            recipients = iter(scan.spool)
        else:
            recipients = early.recipients()
        calls = book.notices.voice.who
        messages = scan.message_count(channels, calls=calls)
        domain = sender_domain(self.rt)
        transports = settings.channels.transports
        with self.journal.store.write() as conn:
            incident_id = self.journal.store.create_incident(conn, playbook_id=book.id,
                                                             title=declared.title,
                                                             drill=drill, at=now)
            # The ids in the context are known only now.
            real = provisional.model_copy(update={"incident_id": incident_id})
            view = fold([real])
            # What its rows are recorded for (transports), also when completed later.
            declared = declared.model_copy(update={"notice": notice_record(
                book, Phase.INITIAL, self.journal.contexts(view, Phase.INITIAL, ""), messages,
                recipients=scan.selected, transports=transports)})
            recorded = ob.enqueue(conn, rows_for_customers(
                incident_id, 1, islice(recipients, FIRST_ROWS), channels, domain,
                transports=transports, fallback=book.notices.fallback, calls=calls), now=now)
            view = self.journal.declare(conn, incident_id, declared, now)
            parties = playbook_parties(self.rt, view)
            internal = 0
            if parties:
                steps = [s.id for s in book.steps if s.action == "notify_parties"]
                internal = self.journal.notify_in(conn, view, parties, kind="declared",
                                                  message="", now=now, steps_done=steps)
        pending = PendingRows(self.journal.store, incident_id, recipients, scan.spool,
                              channels=channels, domain=domain, transports=transports,
                              fallback=book.notices.fallback, calls=calls,
                              now=now, recorded=recorded, total=messages, early=early,
                              actor=self.rt.operator, clock=self.rt.clock.now)
        result = StartResult(incident_id=incident_id, seq=1, phase=Phase.INITIAL,
                             messages=messages if early is None else early.estimate(messages),
                             view=view, internal=internal, counting=early is not None,
                             pending=None if pending.done else pending)
        _audience_counts(result, scan, channels, calls)
        if early is not None:
            pending.counted = lambda read, total: _audience_counts(result, read, channels,
                                                                   calls, messages=total)
        return result

    def _audience(self, book: Playbook, given: str | None, drill: bool,
                  regions: Sequence[str], branches: Sequence[str] = (), *,
                  spool: bool = True, early: bool = False
                  ) -> tuple[AudienceScan, Selection, Path | QuerySource, EarlyRead | None]:
        """Read, validate and select the audience (one pass; see scan_audience), or with
        `early`, perhaps only its first recipients (see read_audience)."""
        settings = self.rt.settings
        if given:
            path = given_audience(self.rt, given)
        elif drill:
            if "drill" not in settings.audiences:
                raise BadInput("a drill needs a drill audience",
                               hint="add audiences: {drill: drill.csv} to incident.yaml, "
                                    "or give --audience")
            path = configured_audience(self.rt, "drill")
        else:
            path = configured_audience(self.rt, settings.default_audience)
        wanted = book.audience
        # --region and --branch name the affected places: a customer of any of them; a drill
        # audience is staff: everyone in it.
        selection = Selection.of(products=wanted.products, regions=wanted.regions,
                                 branches=wanted.branches, segments=wanted.segments,
                                 place_regions=regions, place_branches=branches,
                                 everyone=drill and not given)
        scan, read = read_audience(path, selection, default_language=settings.default_language,
                                   default_region=settings.phone_region, spool=spool,
                                   checks=contact_checks(self.rt),
                                   refuse_utf8=self._utf8_refusal(book), early=early)
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
        return scan, selection, path, read

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
                           limit=book.branches.nearby_max,
                           reachable=book.branches.reachable_regions)
        return {"file": str(path),
                "closed": [_branch(b) for b in closed],
                "open": [{**_branch(b), "distance_km": km} for b, km in near]}

    def _plan(self, book: Playbook, scan: AudienceScan,
              contexts: dict[str, dict[str, Any]]) -> DryRunPlan:
        """Counts, and the SMS segments of each recipient's message as it would be rendered
        (their name, the real id's length), hence the time to send them at the rate."""
        messages = scan.messages(book.notices.channels, calls=book.notices.voice.who)
        forecast = SmsForecast(self.journal.renderer, book.notices.template_set, "initial",
                               contexts)
        if scan.spool is not None:
            try:
                for recipient in scan.spool:
                    if recipient.phone:
                        forecast.add(recipient.language, recipient.name, recipient.ref,
                                     recipient.region)
            finally:
                scan.spool.close()
        sms: dict[str, dict[str, Any]] = {}
        for lang, counts in forecast.segments.items():
            longest = forecast.longest[lang]
            sms[lang] = {"encoding": longest.encoding, "segments": max(counts),
                         "units": longest.units, "messages": dict(sorted(counts.items())),
                         "text": forecast.text(lang, "{customer.name}", "{customer.ref}")}
            if forecast.switched_count[lang]:
                # A name outside GSM-7 (Zoë is GSM-7; Łukasz, 陈 are not) turns a GSM-7 SMS
                # into UCS-2: fewer characters per segment, more segments for that customer.
                sms[lang]["ucs2_names"] = {
                    "customers": forecast.switched_count[lang],
                    "listed": [{"customer": mask_reference(ref), "segments": segments,
                                "characters": chars}
                               for ref, segments, chars in forecast.switched[lang]]}
        channels = self.rt.settings.channels
        estimate = {"email": sum(messages.get("email", {}).values()) / channels.email.rate,
                    "sms": forecast.total() / channels.sms.rate}
        calls = {lang: (n, call_seconds(self.journal.renderer.render_voice(
                    book.notices.template_set, "initial", lang,
                    {**contexts[lang], "customer": SAMPLE_CUSTOMER[lang]})))
                 for lang, n in messages.get("voice", {}).items() if lang in contexts}
        if calls:
            estimate["voice"] = calling_seconds(calls, rate=channels.voice.rate,
                                                concurrent=channels.voice.concurrent)
        return DryRunPlan(playbook=book, audience_path=scan.path, recipients=scan.selected,
                          messages=messages, sms=sms, estimated_seconds=estimate,
                          calls={lang: {"calls": n, "seconds": round(seconds, 1)}
                                 for lang, (n, seconds) in calls.items()},
                          skipped_rows=scan.locations(skipped=True),
                          partial_rows=scan.locations(skipped=False),
                          unreachable=scan.unreachable(book.notices.channels,
                                                       calls=book.notices.voice.who))



def _audience_counts(result: StartResult, scan: AudienceScan, channels: Sequence[str],
                     calls: str, *, messages: int | None = None) -> None:
    """What `result` says of its audience (`messages`: exact, once an early read ended)."""
    result.audience_path = scan.path
    result.recipients = scan.selected
    result.skipped_rows = scan.locations(skipped=True)
    result.partial_rows = scan.locations(skipped=False)
    result.unreachable = scan.unreachable(channels, calls=calls)
    if messages is not None:
        result.messages = messages
        result.counting = False


def _source_record(source: Path | QuerySource) -> dict[str, Any]:
    """Where the audience's rows are read again from: the file's path, or the query (with the
    name of the environment variable holding the URL, never the URL)."""
    if isinstance(source, QuerySource):
        return {"name": source.name, "url_env": source.url_env, "query": source.query}
    return {"path": str(source.resolve())}


def _branch(branch: Branch) -> dict[str, Any]:
    return {"id": branch.id, "name": branch.name, "name_en": branch.name_en,
            "region": branch.region}


def chinese_titles(zh: str | None, zh_hk: str | None) -> dict[str, str]:
    """The Chinese titles given (`title_zh`, `title_zh_hk`), each one plain line."""
    given = {"title_zh": one_line(zh or "").strip(), "title_zh_hk": one_line(zh_hk or "").strip()}
    return {key: value for key, value in given.items() if value}
