"""`incident rollcall start | remind | answer | status`: the staff roll-call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from incident.cli.app import App, pass_app


@click.group()
def rollcall() -> None:
    """Staff roll-call: who is safe and able to work, per branch and team."""


@rollcall.command()
@click.argument("incident_id", metavar="ID")
@click.option("--audience", required=True, type=click.Path(dir_okay=False),
              help="Staff CSV: the customer columns plus team, branch, manager.")
@click.option("--question", default=None, help="The question in English.")
@click.option("--question-zh", default=None, help="The question in Simplified Chinese.")
@click.option("--question-zh-hk", default=None, help="The question in Hong Kong Chinese.")
@click.option("--every", default="15m", show_default=True,
              help="Call those not answering after this long, each round.")
@click.option("--max-rounds", default=3, show_default=True, type=int,
              help="Rounds in all (the first is SMS and email, the others calls).")
@pass_app
def start(app: App, incident_id: str, audience: str, question: str | None,
          question_zh: str | None, question_zh_hk: str | None, every: str,
          max_rounds: int) -> None:
    """Send staff the roll-call question with numbered answers by SMS and email.

    \b
    Example:
      incident rollcall start 3F2A --audience staff.csv --every 15m --max-rounds 3
    """
    result = app.response.rollcall_start(
        incident_id, audience=audience, every=every, max_rounds=max_rounds,
        question={"en": question, "zh-CN": question_zh, "zh-HK": question_zh_hk})
    for problem in result.skipped:
        app.out.warn(f"skipped {problem}")
    if app.out.as_json:
        app.out.json({"id": result.incident_id, "seq": result.seq, "members": result.members,
                      "messages": result.messages, "skipped": len(result.skipped)})
    else:
        app.out.line(f"{result.incident_id}: roll-call of {result.members} staff, "
                     f"{result.messages} messages (event {result.seq})")
        app.out.next(f"incident rollcall status {result.incident_id[-6:]}")
    app.conclude(result)


@rollcall.command()
@click.argument("incident_id", metavar="ID", required=False)
@pass_app
def remind(app: App, incident_id: str | None) -> None:
    """Apply the due round: call the staff who have not answered (also done by watch)."""
    result = app.response.remind(incident_id)
    if app.out.as_json:
        app.out.json({"rounds": [{"id": i, "round": n, "called": c}
                                 for i, n, c in result.rounds]})
    else:
        for line in result.lines() or ["No roll-call round is due."]:
            app.out.line(line)
    app.conclude(result)


@rollcall.command()
@click.argument("incident_id", metavar="ID")
@click.argument("answer", type=click.IntRange(1, 3))
@click.option("--member", required=True, help="The staff id (as in the staff CSV).")
@pass_app
def answer(app: App, incident_id: str, answer: int, member: str) -> None:
    """Enter a staff member's answer taken by phone (recorded as yours): 1 safe and able to
    work, 2 safe but unable to work, 3 need help (alerts their manager and the duty desk).

    \b
    Example:
      incident rollcall answer 3F2A --member S017 1
    """
    result = app.response.rollcall_enter(incident_id, member=member, answer=answer)
    if app.out.as_json:
        app.out.json({"id": result.incident_id, "member": result.member,
                      "answer": result.answer, "alerted": result.alerted})
    else:
        app.out.line(f"{result.incident_id}: {result.member} answered {result.answer}"
                     + (f"; alerted {', '.join(result.alerted)}" if result.alerted else ""))
    app.conclude(result)


@rollcall.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@pass_app
def replies(app: App, paths: tuple[Path, ...]) -> None:
    """Record email replies to roll-calls (message files, .eml folders, mbox, Maildir): the
    sender's address names the staff member, the reply's first digit (above any quoted text)
    is the answer; each Message-ID is recorded once.

    \b
    Example:
      incident rollcall replies ~/Maildir/.Rollcall
    """
    result = app.response.rollcall_replies(list(paths))
    answers = [{"id": a.incident_id, "member": a.member, "answer": a.answer,
                "recorded": a.recorded} for a in result.answers]
    if app.out.as_json:
        app.out.json({"answers": answers, "unmatched": result.unmatched})
    else:
        for a in answers:
            app.out.line(f"{a['id']}: {a['member']} answered {a['answer'] or '(no answer)'}"
                         + ("" if a["recorded"] else " — not recorded"))
        for where in result.unmatched:
            app.out.warn(f"{where}: from nobody on an open roll-call")
    app.conclude(result)


@rollcall.command()
@click.argument("incident_id", metavar="ID")
@pass_app
def status(app: App, incident_id: str) -> None:
    """The headcount live: per answer, unanswered, per branch and team, branch readiness."""
    result = app.response.rollcall.status(incident_id)
    if app.out.as_json:
        app.out.json({"id": result.incident_id, **result.data})
    else:
        show(app, result.data)
    app.conclude(result)


def show(app: App, data: dict[str, Any]) -> None:
    """The roll-call's headcount, readiness and need-help cases as tables."""
    columns = ["", "able", "unable", "need_help", "unanswered"]
    total = data["total"]
    drill = "[DRILL] " if data["drill"] else ""
    app.out.line(f"{drill}Roll-call: {data['members']} staff, round {data['round']} of "
                 f"{data['max_rounds']} · able {total['able']} · unable {total['unable']} · "
                 f"need help {total['need_help']} · unanswered {total['unanswered']}")
    for key, title in (("branches", "By branch"), ("teams", "By team")):
        app.out.table(title, columns, [[name, *(c[k] for k in columns[1:])]
                                       for name, c in data[key].items()])
    if data["readiness"]:
        app.out.table("Branch readiness", ["branch", "verdict", "why"],
                      [[b, r["verdict"], r["why"]] for b, r in data["readiness"].items()])
    for case in data["need_help"]:
        handled = "handled" if case["handled_at"] else "NOT handled"
        app.out.warn(f"need help: {case['member']} at {case['at']} ({handled}); alerted "
                     f"{', '.join(case['alerted']) or 'nobody'}")


COMMANDS = [rollcall]
