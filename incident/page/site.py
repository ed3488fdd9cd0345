"""The status site's files from the public view of the record: HTML in each language, the
Statuspage-shaped API and the feeds. Deterministic: the same record gives the same bytes (no
time but the record's own, sorted keys, incidents in a fixed order)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from incident.page.api import api_files
from incident.page.feeds import feed_files
from incident.page.labels import LABELS, LANGUAGE_NAMES, PAGE_LANGUAGES
from incident.page.model import PublicIncident, regional_hotlines
from incident.page.workers import render_all
from incident.regions import labelled_time, zone_label
from incident.timeutil import HONG_KONG

Files = dict[str, bytes]
Entry = tuple[str, str, str, str, bytes]  # SiteBuilder.rendered(): name, head, lang, here, text
# In a build: "the file already there is this page" (SiteBuilder.build's `kept`).
KEEP = b"\0kept\0"


@dataclass(frozen=True)
class SiteInfo:
    """What the site says of itself (incident.yaml: organisation, timezone, status_page)."""

    name: dict[str, str]  # the organisation's name by language
    page_id: str
    url: str  # public address, "" if not known
    time_zone: str  # the configured zone (IANA name)
    default_language: str
    days: int = 90
    zone_labels: dict[str, str] | None = None  # by language; default: incident.regions'

    def zone(self, lang: str) -> ZoneInfo:
        """The zone times are shown in for `lang` (Hong Kong time for zh-HK, as the notices)."""
        return HONG_KONG if lang == "zh-HK" else ZoneInfo(self.time_zone)


class SiteBuilder:
    """Renders the site; keeps each incident's pages by (incident, head, language) so that a
    rebuild after one notice renders only what changed (the index, feeds and API aside)."""

    def __init__(self, template_path: Sequence[Path], info: SiteInfo) -> None:
        self.info = info
        # Templates compiled once per builder (auto_reload off), as the fingerprint below is
        # taken once; with it on, every page rendered stats each template file it uses.
        self.env = Environment(loader=FileSystemLoader([str(p) for p in template_path]),
                               autoescape=select_autoescape(default=True, default_for_string=True),
                               undefined=StrictUndefined, trim_blocks=False,
                               keep_trailing_newline=True, auto_reload=False)
        loader = self.env.loader
        assert loader is not None
        css = loader.get_source(self.env, "page/page.css")[0]
        digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
        # What a page's bytes depend on besides its incident: the templates and the site's
        # settings. A page kept from an earlier build is reused only under the same one.
        sources = [loader.get_source(self.env, f"page/{name}")[0]
                   for name in ("base.html", "_macros.html", "index.html", "incident.html",
                                "_current.html", "_past.html", "page.css")]
        self.fingerprint = hashlib.sha256(repr((sources, info)).encode()).hexdigest()
        self.shared = {"css": Markup(css), "style_hash": f"sha256-{digest}",
                       "names": LANGUAGE_NAMES, "languages": PAGE_LANGUAGES}
        self._cache: dict[tuple[str, str, str], bytes] = {}
        self._docs: dict[tuple[str, str], bytes] = {}  # API documents by (incident, head)
        # index entries (UTF-8) by (template, incident, head, language, here)
        self._fragments: dict[tuple[str, str, str, str, str], bytes] = {}
        self._times: dict[str, Callable[[datetime | None], str]] = {
            lang: self._clock(lang) for lang in PAGE_LANGUAGES}

    def _clock(self, lang: str) -> Callable[[datetime | None], str]:
        zone = self.info.zone(lang)
        label = zone_label(zone, lang, self.info.zone_labels or {})

        def when(value: datetime | None) -> str:
            return labelled_time(value, zone, label, lang) if value is not None else ""
        return when

    def build(self, incidents: Sequence[PublicIncident],
              kept: Callable[[str], str | None] | None = None) -> Files:
        """Every file of the site, by path relative to its root. `kept(path)`: the incident
        head an incident page already in the site shows (rendered under this fingerprint), if
        any; such a page is not rendered again (its entry is KEEP)."""
        ordered = sorted(incidents, key=lambda i: (i.created_at, i.id), reverse=True)
        updated = max((i.updated_at for i in ordered), default=None)
        files: Files = {}
        live: set[tuple[str, str, str]] = set()
        jobs: list[tuple[PublicIncident, str, str]] = []
        for lang in PAGE_LANGUAGES:
            for incident in ordered:
                key = (incident.id, incident.head, lang)
                path = page_path(lang, incident)
                live.add(key)
                page = self._cache.get(key)
                if page is None and kept and kept(path) == incident.head:
                    page = KEEP
                if page is None:
                    jobs.append((incident, lang, path))
                files[path] = page or b""
        heads = {(k[0], k[1]) for k in live}

        def the_rest() -> None:  # beside the pages rendered in a child, if any
            for lang in PAGE_LANGUAGES:
                files[f"{lang}/index.html"] = self._render_index(ordered, lang, "../", updated)
            files["index.html"] = self._render_index(ordered, self.info.default_language, "",
                                                     updated)
            self._docs = {k: v for k, v in self._docs.items() if k in heads}
            self._fragments = {k: v for k, v in self._fragments.items() if k[1:3] in heads}
            files.update(api_files(ordered, self.info, updated, self._docs))
            files.update(feed_files(ordered, self.info, updated, PAGE_LANGUAGES))

        # The child takes the larger share: the rest of the build (the views of every
        # incident for the index, the index, API and feeds) is this process's; at 1,000
        # incidents about 40 % of a full build's CPU.
        pages = render_all(lambda job: self._render_incident(job[0], job[1], updated), jobs,
                           beside=the_rest, share=0.3)
        for (incident, lang, path), page in zip(jobs, pages, strict=True):
            self._cache[(incident.id, incident.head, lang)] = files[path] = page
        self._cache = {k: v for k, v in self._cache.items() if k in live}
        return files

    def rendered(self) -> dict[str, list[Entry]]:
        """The index entries and API documents rendered so far, by incident: (name, head,
        lang, here, UTF-8 bytes) (the cache next to the site keeps them for the next process:
        `remember`)."""
        out: dict[str, list[Entry]] = {}
        for (iid, head), doc in self._docs.items():
            out.setdefault(iid, []).append(("doc", head, "", "", doc))
        for (name, iid, head, lang, here), html in self._fragments.items():
            out.setdefault(iid, []).append((name, head, lang, here, html))
        return out

    def remember(self, iid: str, entries: Iterable[Entry]) -> None:
        """Take what `rendered` returned for incident `iid` in an earlier process (the
        caller vouches that it was rendered under this fingerprint)."""
        for name, head, lang, here, text in entries:
            if name == "doc":
                self._docs[(iid, head)] = text
            else:
                self._fragments[(name, iid, head, lang, here)] = text

    def incident_pages(self, incident: PublicIncident) -> list[str]:
        """The paths of an incident's pages."""
        return [page_path(lang, incident) for lang in PAGE_LANGUAGES]

    # ------------------------------------------------------------------ HTML

    def _page(self, template: str, lang: str, here: str, updated: datetime | None,
              switch: dict[str, str], **values: Any) -> bytes:
        t = LABELS[lang]
        html = self.env.get_template(template).render(
            **self.shared, **values, lang=lang, t=t, here=here, switch=switch,
            org=self.info.name.get(lang) or self.info.name.get("en", ""),
            updated=self._times[lang](updated))
        return html.encode("utf-8")

    def _render_index(self, ordered: Sequence[PublicIncident], lang: str, here: str,
                      updated: datetime | None, *, splice: bool = True) -> bytes:
        current = [i for i in ordered if not i.resolved]
        since = updated - timedelta(days=self.info.days) if updated else None
        past = [i for i in ordered if i.resolved and since is not None and i.updated_at >= since]
        switch = {other: f"{here}{other}/index.html" for other in PAGE_LANGUAGES}
        entries = [*(self._fragment("_current", i, lang, here) for i in current),
                   *(self._fragment("_past", i, lang, here) for i in past)]
        heading = LABELS[lang]["past"].format(days=self.info.days)
        if splice:
            # Rendered with a marker in place of each entry, then the entries' bytes spliced
            # in: the same bytes as rendering them in (Markup, output as is) without decoding
            # and encoding again every open incident's entry. A template that changes its
            # entries (a filter: upper, truncate, length...) changes the markers too (letters
            # of both cases, digits): then the entries are rendered in.
            marks = [Markup(f"\0e{n}E\0") for n in range(len(entries))]
            parts = self._page("page/index.html", lang, here, updated, switch,
                               current=marks[:len(current)], past=marks[len(current):],
                               past_heading=heading).split(b"\0")
            if parts[1::2] == [f"e{n}E".encode() for n in range(len(entries))]:
                spliced = [parts[0]]
                for entry, text in zip(entries, parts[2::2], strict=True):
                    spliced += (entry, text)
                return b"".join(spliced)
            # else a NUL of the site's own (in its name?): the entries rendered in
        shown = [Markup(entry.decode()) for entry in entries]
        return self._page("page/index.html", lang, here, updated, switch,
                          current=shown[:len(current)], past=shown[len(current):],
                          past_heading=heading)

    def _render_incident(self, incident: PublicIncident, lang: str,
                         updated: datetime | None) -> bytes:
        here = "../../"
        switch = {other: f"{here}{other}/incidents/{incident.id}.html"
                  for other in PAGE_LANGUAGES}
        return self._page("page/incident.html", lang, here, incident.updated_at, switch,
                          i=self._detail(incident, lang, here))

    def _fragment(self, name: str, incident: PublicIncident, lang: str, here: str) -> bytes:
        """An incident's entry in the index (rendered once per incident head), UTF-8."""
        key = (name, incident.id, incident.head, lang, here)
        found = self._fragments.get(key)
        if found is None:
            found = self.env.get_template(f"page/{name}.html").render(
                i=self._summary(incident, lang, here), t=LABELS[lang], lang=lang).encode()
            self._fragments[key] = found
        return found

    def _summary(self, incident: PublicIncident, lang: str, here: str) -> dict[str, Any]:
        """What the index shows of an incident."""
        t, when, ctx = LABELS[lang], self._times[lang], incident.latest(lang)
        manual = ctx.get("manual", {})
        latest = incident.updates[-1]
        return {"href": f"{here}{lang}/incidents/{incident.id}.html",
                "title": incident.title(lang), "impact": incident.impact,
                "status": t.get(incident.status, incident.status),
                "kind": t.get(incident.kind, ""), "started": when(incident.created_at),
                "eta": when(incident.eta), "resolved_at": when(incident.resolved_at),
                "next_update": "" if incident.resolved else str(ctx.get("next_update") or ""),
                "hotline": manual.get("hotline") or ctx.get("org", {}).get("hotline", ""),
                "latest": latest.body(lang)}

    def _detail(self, incident: PublicIncident, lang: str, here: str) -> dict[str, Any]:
        """What an incident's page shows."""
        t, when, ctx = LABELS[lang], self._times[lang], incident.latest(lang)
        found = self._summary(incident, lang, here)
        found["manual"] = ctx.get("manual", {})
        found["hotlines"] = regional_hotlines(ctx)
        found["branches"] = ctx.get("branches", {})
        found["eta_history"] = [{"eta": when(e.eta), "at": when(e.announced_at)}
                                for e in incident.eta_history]
        found["updates"] = [{"seq": u.seq, "label": t.get(u.phase, u.phase), "at": when(u.at),
                             "body": u.body(lang)} for u in incident.updates]
        return found


def page_path(lang: str, incident: PublicIncident) -> str:
    return f"{lang}/incidents/{incident.id}.html"


__all__ = ["KEEP", "Entry", "Files", "SiteBuilder", "SiteInfo"]
