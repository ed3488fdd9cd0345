"""Commands that prepare: init, playbooks list | show | validate."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import click

from incident.cli.app import App, pass_app
from incident.cli.output import Output, safe, writing
from incident.errors import BadInput, PlaybookInvalid
from incident.resources import shipped
from incident.timeutil import format_duration

if TYPE_CHECKING:  # imported where used: `incident --help` needs none of it
    from incident.response.checks import PlaybookCheck



@click.command()
@click.argument("directory", metavar="[DIR]", default=".",
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
@pass_app
def init(app: App, directory: Path, force: bool) -> None:
    """Create a working incident.yaml, the shipped playbooks and templates, and sample
    customer lists in DIR, for local editing.

    \b
    Example:
      incident init ops && cd ops && incident start core-banking-outage --title Test --drill
    """
    written, kept = _copy_files(_init_plan(directory), directory, force=force)
    if app.out.as_json:
        app.out.json({"directory": str(directory), "written": [str(p) for p in written],
                      "kept": [str(p) for p in kept]})
        return
    app.out.line(f"Wrote {len(written)} files to {safe(str(directory))}"
                 + (f"; kept {len(kept)} existing (use --force to overwrite)" if kept else ""))
    app.out.next(f"cd {directory}", "incident playbooks list",
                 "incident start core-banking-outage --title \"...\" --drill")


def _init_plan(directory: Path) -> list[tuple[Path, Path]]:
    """What init copies: (shipped file, where it goes in `directory`)."""
    plan = [(shipped("incident.yaml.example"), directory / "incident.yaml"),
            (shipped("examples") / "customers.csv", directory / "customers.csv"),
            (shipped("examples") / "drill.csv", directory / "drill.csv"),
            (shipped("examples") / "branches.csv", directory / "branches.csv")]
    for folder in ("playbooks", "templates"):
        source = shipped(folder)
        # Report templates are the toolkit's own (read from the package), not for editing.
        plan += [(path, directory / folder / path.relative_to(source))
                 for path in sorted(source.rglob("*"))
                 if path.is_file() and path.relative_to(source).parts[0] != "_report"]
    return plan


def _copy_files(plan: list[tuple[Path, Path]], directory: Path, *,
                force: bool) -> tuple[list[Path], list[Path]]:
    """Copy the plan's files into `directory`: those written, and those kept as they were."""
    written, kept = [], []
    with writing(directory):
        directory.mkdir(parents=True, exist_ok=True)
        for source, target in plan:
            if target.exists() and not force:
                kept.append(target)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            written.append(target)
    return written, kept


@click.group()
def playbooks() -> None:
    """List, show and validate playbooks (local playbooks/ first, then the shipped ones)."""


@playbooks.command(name="list")
@pass_app
def list_playbooks(app: App) -> None:
    """Every playbook found, with its kind, grades and deadlines."""
    from incident.playbooks import load_playbook, playbook_files

    rows: list[list[str]] = []
    data: list[dict[str, object]] = []
    for stem, path in playbook_files(app.rt.playbook_path).items():
        try:
            book = load_playbook(path)
        except BadInput as exc:
            rows.append([stem, "INVALID", exc.message, "", "", ""])
            data.append({"name": stem, "path": str(path), "error": exc.message})
            continue
        first = format_duration(book.principles.fast_response.first_notice_within)
        cadence = format_duration(book.principles.transparency.update_every)
        rows.append([book.id, book.kind.value.replace("_", " "),
                     f"{book.name.zh_CN}\n{book.name.en}",
                     "/".join(level.id for level in book.severity.levels), first, cadence])
        data.append({"name": book.id, "path": str(path), "kind": book.kind.value,
                     "title": {"zh-CN": book.name.zh_CN, "en": book.name.en},
                     "grades": [level.id for level in book.severity.levels]})
    if app.out.as_json:
        app.out.json(data)
    else:
        app.out.table(None, ["playbook", "kind", "name", "grades", "first notice", "updates"],
                      rows)
        app.out.next("incident playbooks show NAME", "incident playbooks validate")


@playbooks.command()
@click.argument("name")
@pass_app
def show(app: App, name: str) -> None:
    """Show one playbook in full (as validated)."""
    import yaml

    from incident.playbooks import find_playbook, load_playbook

    book = load_playbook(find_playbook(name, app.rt.playbook_path))
    data = book.model_dump(mode="json", by_alias=True)
    if app.out.as_json:
        app.out.json(data)
        return
    app.out.console.print(safe(yaml.safe_dump(data, allow_unicode=True, sort_keys=False)))


@playbooks.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@pass_app
def validate(app: App, paths: tuple[Path, ...]) -> None:
    """Validate playbooks and render every notice (phase × channel × language) with sample
    data. Without PATH: every playbook found. Exits 2 naming file, line and field."""
    from incident.playbooks import playbook_files
    from incident.response.checks import check_playbook

    targets = list(paths) or list(playbook_files(app.rt.playbook_path).values())
    if not targets:
        raise BadInput("no playbooks found", hint="incident init copies the shipped ones")
    checks = [check_playbook(app.rt, app.response.journal.renderer, Path(p)) for p in targets]
    bad = [c for c in checks if c.problems]
    _show_checks(app.out, checks)
    if bad:
        raise PlaybookInvalid(f"{len(bad)} of {len(checks)} playbooks are invalid",
                              problems=[p for c in bad for p in c.problems])


def _show_checks(out: Output, checks: list[PlaybookCheck]) -> None:
    """Each playbook checked: valid or its problems, and its SMS notices at their longest."""
    from incident.cli.lifecycle import format_duration_s

    if out.as_json:
        out.json([{"path": c.path, "valid": not c.problems,
                   "problems": [f"{loc}: {msg}" for loc, msg in c.problems],
                   "sms": c.sms} for c in checks])
        return
    rows = []
    for c in checks:
        worst = max(c.sms.values(), key=lambda s: float(s["seconds_per_1000"]), default=None)
        rows.append([c.playbook.id if c.playbook else c.path,
                     "ok" if not c.problems else f"{len(c.problems)} problem(s)",
                     f"{len(c.sms)} SMS, ≤{worst['segments']} segments, "
                     f"{format_duration_s(float(worst['seconds_per_1000']))} per 1,000"
                     if worst else "", c.path])
    out.table("Playbooks (SMS: worst case, longest values; see README, Templates)",
              ["playbook", "result", "notices", "file"], rows)


COMMANDS = [init, playbooks]
