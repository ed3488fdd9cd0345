"""`history.atom` and `history.rss` per language (feedgen): one entry per public notice, the
ENTRIES most recent, newest first. Every time in them is the record's (feedgen would
otherwise stamp the build time), so the same record gives the same bytes."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from feedgen.feed import FeedGenerator

from incident.page.labels import LABELS
from incident.page.model import PublicIncident

if TYPE_CHECKING:
    from incident.page.site import SiteInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # an empty feed's "updated": a fixed time
ENTRIES = 100  # the most recent public notices in a feed


def feed_files(ordered: Sequence[PublicIncident], info: SiteInfo, updated: datetime | None,
               languages: Sequence[str]) -> dict[str, bytes]:
    """The feeds of each language under `<lang>/`, and the default language's at the root
    (where Statuspage has them)."""
    out: dict[str, bytes] = {}
    # Chosen by the notices' times alone: an incident kept from an earlier build is read in
    # full only if one of its notices is among them.
    # (at, id, seq) is unique: the tuples order as their first three items (no key function)
    chosen = heapq.nlargest(ENTRIES, ((at, incident.id, seq, incident)
                                      for incident in ordered
                                      for at, seq in incident.moments()))
    latest = [(at, iid, seq, incident, incident.update(seq))
              for at, iid, seq, incident in chosen]
    for lang in languages:
        atom, rss = _feeds(latest, info, updated or EPOCH, lang)
        out[f"{lang}/history.atom"], out[f"{lang}/history.rss"] = atom, rss
        if lang == info.default_language:
            out["history.atom"], out["history.rss"] = atom, rss
    return out


def _feeds(latest: Sequence[tuple[Any, ...]], info: SiteInfo, updated: datetime,
           lang: str) -> tuple[bytes, bytes]:
    t = LABELS[lang]
    base = f"{info.url}/{lang}/" if info.url else ""
    name = info.name.get(lang) or info.name.get("en", "")
    fg = FeedGenerator()
    fg.id(f"{base}history.atom" if base else f"urn:incident-status:{info.page_id}:{lang}")
    fg.title(f"{name} · {t['status_page']}")
    fg.description(f"{name} · {t['status_page']}")
    fg.link(href=f"{base}index.html", rel="alternate")
    fg.language(lang)
    fg.updated(updated)
    fg.lastBuildDate(updated)
    fg.generator("incident")
    for _at, _id, _seq, incident, update in latest:
        entry = fg.add_entry(order="append")
        key = f"{incident.id}/{update.seq}"
        entry.id(f"{base}incidents/{key}" if base else f"urn:incident:{key}")
        entry.guid(f"urn:incident:{key}", permalink=False)
        entry.title(f"{incident.title(lang)} · {t.get(update.phase, update.phase)}")
        entry.link(href=f"{base}incidents/{incident.id}.html#u{update.seq}")
        entry.description(update.body(lang) or t.get(update.status, update.status))
        entry.published(update.at)
        entry.updated(update.at)
    return fg.atom_str(pretty=True), fg.rss_str(pretty=True)
