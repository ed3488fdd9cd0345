"""`incident manual …`: the manual-handling channel and the cases handled through it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from incident.cli.app import App, pass_app
from incident.cli.output import safe

if TYPE_CHECKING:  # `incident --help` must not import the domain model
    from incident.state import IncidentView



def _both(text: str | None, text_zh: str | None,
          text_zh_hk: str | None) -> dict[str, str] | None:
    """A text given on the command line, in every notice language (the Chinese typed for
    each, else converted, else the English after a Chinese lead-in)."""
    from incident.languages import LANGUAGES, chinese_text

    if text is None and text_zh is None and text_zh_hk is None:
        return None
    english = (text or text_zh or text_zh_hk or "").strip()
    return {lang: chinese_text(lang, english, (text_zh or "").strip() or None,
                               (text_zh_hk or "").strip() or None) for lang in LANGUAGES}


def _masked(customer: str) -> str:
    from incident.privacy import mask_reference

    return mask_reference(customer)


def _cases_json(view: IncidentView) -> list[dict[str, Any]]:
    """The cases as shown: customer masked, contacts typed into the texts masked."""
    from incident.privacy import scrub

    return [{"case": c.id, "customer": _masked(c.customer), "request": scrub(c.request),
             "amount": c.amount, "urgent": c.urgent, "logged_at": c.logged_at.isoformat(),
             "logged_by": c.logged_by,
             "reconciled_at": c.reconciled_at.isoformat() if c.reconciled_at else None,
             "reconciled_by": c.reconciled_by, "note": scrub(c.note) if c.note else c.note}
            for c in view.cases.values()]


@click.group()
def manual() -> None:
    """The manual-handling channel: open it, log the requests handled by hand, reconcile
    them after recovery, close it.

    \b
    Example:
      incident manual open 3F2A --workaround "Cards work at ATMs within daily limits"
      incident manual log 3F2A --customer C0042 --request "Urgent cash withdrawal" \\
          --amount 5000 --urgent
      incident manual reconcile 3F2A M001 --note "Posted to the ledger"
    """


@manual.command("open")
@click.argument("incident_id", metavar="ID")
@click.option("--hotline", multiple=True, metavar="[REGION=]NUMBER",
              help="Number to call (default: the organisation's hotline); REGION=NUMBER for "
                   "a region's own, besides a default (repeat).")
@click.option("--counters", help="Where counters serve customers (both languages).")
@click.option("--counters-zh", help="The counters text in Chinese.")
@click.option("--counters-zh-hk", help="The counters text in Traditional Chinese (zh-HK).")
@click.option("--hours", help="Service hours (both languages).")
@click.option("--hours-zh", help="The hours in Chinese.")
@click.option("--hours-zh-hk", help="The hours in Traditional Chinese (zh-HK).")
@click.option("--workaround", help="A temporary workaround customers can use.")
@click.option("--workaround-zh", help="The workaround in Chinese.")
@click.option("--workaround-zh-hk", help="The workaround in Traditional Chinese (zh-HK).")
@pass_app
def open_(app: App, incident_id: str, hotline: tuple[str, ...], counters: str | None,
          counters_zh: str | None, counters_zh_hk: str | None, hours: str | None,
          hours_zh: str | None, hours_zh_hk: str | None, workaround: str | None,
          workaround_zh: str | None, workaround_zh_hk: str | None) -> None:
    """Open the playbook's manual channel (or change its details while open); every later
    customer notice announces it. Options override the playbook's texts."""
    from incident.regions import describe

    texts = {"counters": _both(counters, counters_zh, counters_zh_hk),
             "hours": _both(hours, hours_zh, hours_zh_hk),
             "workaround": _both(workaround, workaround_zh, workaround_zh_hk)}
    result = app.response.manual.open(incident_id, hotline=hotline, texts=texts)
    app.touch(result.incident_id)
    view, out = result.view, app.out
    m = view.manual
    assert m is not None
    shown = m.hotline or app.rt.settings.organisation.hotline
    payload = {"id": view.id, "open": True, "hotline": shown, "hours": m.hours,
               "counters": m.counters, "workaround": m.workaround}
    if out.as_json:
        out.json(payload)
        return
    out.line(f"Manual channel of {view.id} open: it is in every customer notice from now on.")
    lang = app.rt.settings.default_language
    out.table(None, ["", "text"], [
        ["hotline", describe(shown)], ["hours", m.hours[lang]],
        ["counters", (m.counters or {}).get(lang, "—")],
        ["workaround", (m.workaround or {}).get(lang, "—")]])
    short = view.id[-6:]
    out.next(f"incident manual log {short} --customer REF --request \"...\"",
             f"incident update {short} -m \"...\"  (tell customers now)")


@manual.command("log")
@click.argument("incident_id", metavar="ID")
@click.option("--customer", required=True, metavar="REF", help="Customer reference.")
@click.option("--request", "request", required=True, metavar="TEXT",
              help="What the customer needed, as handled.")
@click.option("--amount", metavar="N", help="Amount involved (e.g. 5000 or 1234.50).")
@click.option("--urgent", is_flag=True, help="An urgent case (served first, reported).")
@pass_app
def log(app: App, incident_id: str, customer: str, request: str, amount: str | None,
        urgent: bool) -> None:
    """Record a request handled by hand (who took it and when are recorded)."""
    result = app.response.manual.log(incident_id, customer=customer, request=request,
                                    amount=amount, urgent=urgent)
    app.touch(result.incident_id)
    view = result.view
    case = list(view.cases.values())[-1]
    if app.out.as_json:
        app.out.json({"id": view.id, **_cases_json(view)[-1]})
        return
    app.out.line(f"Case {case.id} logged on {view.id} for customer "
                 f"{safe(_masked(case.customer))} by {safe(case.logged_by)}"
                 + (" (urgent)" if case.urgent else "") + ".")
    app.out.line(f"{len(view.unreconciled)} case(s) to reconcile after recovery.")


@manual.command("list")
@click.argument("incident_id", metavar="ID")
@pass_app
def list_(app: App, incident_id: str) -> None:
    """The manual cases of an incident (customers masked)."""
    view = app.response.queries.view(incident_id)
    app.touch(view.id)
    out = app.out
    if out.as_json:
        out.json({"id": view.id, "open": view.manual_open, "cases": _cases_json(view),
                  "unreconciled": len(view.unreconciled)})
        return
    state = "open" if view.manual_open else ("closed" if view.manual else "not opened")
    if not view.cases:
        out.line(f"No manual cases on {view.id} (channel {state}).")
        return
    now = app.rt.clock.now()
    out.table(f"Manual cases of {view.id} (channel {state}; {len(view.unreconciled)} to "
              "reconcile)", ["case", "customer", "request", "amount", "urgent", "logged",
                             "by", "reconciled"],
              [[c["case"], c["customer"], c["request"][:50], c["amount"] or "",
                "yes" if c["urgent"] else "", out.short(case.logged_at, now), c["logged_by"],
                out.short(case.reconciled_at, now)]
               for c, case in zip(_cases_json(view), view.cases.values(), strict=True)])


@manual.command("reconcile")
@click.argument("incident_id", metavar="ID")
@click.argument("case", metavar="CASE")
@click.option("--note", help="How it was entered back (e.g. the posting reference).")
@pass_app
def reconcile(app: App, incident_id: str, case: str, note: str | None) -> None:
    """Mark CASE (e.g. M001) as entered back into the recovered system."""
    result = app.response.manual.reconcile(incident_id, case, note=note)
    app.touch(result.incident_id)
    view = result.view
    left = len(view.unreconciled)
    if app.out.as_json:
        app.out.json({"id": view.id, "unreconciled": left, "cases": _cases_json(view)})
        return
    app.out.line(f"Reconciled; {left} case(s) left to reconcile on {view.id}.")
    if not left and not view.status.is_open:
        app.out.next(f"incident close {view.id[-6:]}")


@manual.command("close")
@click.argument("incident_id", metavar="ID")
@click.option("--note", help="Why, e.g. 'service restored, branches back to normal'.")
@pass_app
def close(app: App, incident_id: str, note: str | None) -> None:
    """Close the manual channel (cases stay to be reconciled)."""
    result = app.response.manual.close(incident_id, note=note)
    app.touch(result.incident_id)
    view = result.view
    if app.out.as_json:
        app.out.json({"id": view.id, "open": False, "unreconciled": len(view.unreconciled)})
        return
    app.out.line(f"Manual channel of {view.id} closed; later notices no longer announce it.")
    if view.unreconciled:
        app.out.warn(f"{len(view.unreconciled)} case(s) still to reconcile: "
                     f"incident manual list {view.id[-6:]}")


COMMANDS = [manual]
