"""Post-mortem reports: figures and verdicts per principle (`metrics` assembles them from the
event log and SQL aggregates over the outbox in `incident.store.reports`; the principles are
judged in `reach` and `duties` by the rules of `checks`), the period summary across incidents
(`summary`), and the documents (`render`: JSON, Markdown, HTML with an SVG timeline in `svg`,
words per language in `labels`)."""

from __future__ import annotations

from incident.report.metrics import PRINCIPLES, SECTIONS, VERDICTS, measure
from incident.report.render import FORMATS, render
from incident.report.summary import summarise

__all__ = ["FORMATS", "PRINCIPLES", "SECTIONS", "VERDICTS", "measure", "render", "summarise"]
