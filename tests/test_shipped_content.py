"""The shipped content: playbooks, notice templates and example customer lists.

Templates are rendered here with a jinja2 environment built the way the renderer builds it
(sandboxed, StrictUndefined, autoescape for .html only, trim_blocks and lstrip_blocks), so these
tests do not depend on `incident.rendering`.
"""

from __future__ import annotations

import csv
import itertools
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
from email_validator import validate_email
from jinja2 import FileSystemLoader, StrictUndefined, nodes, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment

from incident.playbooks import Playbook, load_playbook
from incident.rendering import spoken_digits, without_year

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = ROOT / "playbooks"
TEMPLATES = ROOT / "templates"
EXAMPLES = ROOT / "examples"

PLAYBOOK_IDS = {
    "core-banking-outage": "system_failure",
    "online-banking-outage": "system_failure",
    "card-payments-outage": "system_failure",
    "typhoon": "natural_disaster",
    "rainstorm-flood": "natural_disaster",
    "earthquake": "natural_disaster",
}
SETS = ("system_failure", "natural_disaster")
PHASES = ("initial", "update", "eta_changed", "resolved")
LANGS = ("zh-CN", "zh-HK", "en")
PARTS = ("email.subject.{lang}.txt", "email.text.{lang}.txt", "email.html.{lang}.html",
         "sms.{lang}.txt")
PARTIES = {"tech_support", "branch_operations", "compliance", "pr_media", "regulator",
           "risk_management", "facilities"}
ROLES = {"commander", "communications", "operations", "liaison", "engineering",
         "branch_manager", "compliance"}
PRODUCTS = {"current_account", "savings", "debit_card", "credit_card", "mobile_banking",
            "internet_banking", "wealth", "insurance", "loan"}
REGIONS = {"guangdong", "shanghai", "beijing", "hong-kong", "fujian"}

DRILL = {"zh-CN": "【演练】", "zh-HK": "【演習】", "en": "[DRILL]"}
FOOTER = {"zh-CN": "这是服务通知，无需退订", "zh-HK": "這是服務通知，無需退訂",
          "en": "This is a service notice about your account"}
ASSESSING = {"zh-CN": "评估", "zh-HK": "評估", "en": "assess"}
RECONCILED = {"zh-CN": "逐笔", "zh-HK": "逐筆", "en": ("posted to your account", "completed")}

# 3GPP TS 23.038 default alphabet and its extension table (two septets each).
GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("\f^{}\\[~]|€")

# The template context (see the renderer's contract): top-level name -> allowed attributes.
CONTEXT_SCHEMA: dict[str, set[str] | None] = {
    "lang": None,
    "org": {"name", "hotline", "website"},
    "incident": {"id", "ref", "title", "severity", "severity_name", "status", "kind",
                 "detected_at", "declared_at", "affected", "regions", "drill"},
    "notice": {"phase", "message", "at"},
    "eta": {"known", "at", "previous", "reason"},
    "next_update": None,
    "manual": {"open", "hotline", "counters", "hours", "workaround"},
    "branches": {"closed", "open", "none_open"},
    "zone": {"name", "label"},
    "playbook": {"name", "summary", "impact", "measures", "advice"},
    "customer": {"name", "ref"},
    "resolved": {"at"},
}
# Internal notices to parties (template set `internal`) see more: the kind of notice and the
# coordination detail customers do not get.
INTERNAL_SCHEMA: dict[str, set[str] | None] = {
    **CONTEXT_SCHEMA,
    "notice": {"phase", "message", "at", "kind", "kind_label"},
    "internal": {"operator", "severity_criteria", "customers", "customer_notices", "deliveries",
                 "manual", "due", "parties", "record"},
}

# Realistic sample values: titles ~30 characters (English), messages ~60.
SAMPLE = {
    "zh-CN": {
        "org": "示例银行",
        "title": {"system_failure": "手机银行和网上银行暂停服务",
                  "natural_disaster": "八号热带气旋警告信号生效"},
        "message": "转账暂停，余额可通过ATM或柜台查询",
        "reason": "数据库切换需要额外校验",
        "name": "张伟",
        "status": "正在排查",
    },
    "zh-HK": {
        "org": "示例銀行",
        "title": {"system_failure": "手機銀行和網上銀行暫停服務",
                  "natural_disaster": "八號熱帶氣旋警告信號生效"},
        "message": "轉賬暫停，結餘可透過櫃員機或分行查詢",
        "reason": "數據庫切換需要額外核對",
        "name": "陳大文",
        "status": "正在調查",
    },
    "en": {
        "org": "Example Bank",
        "title": {"system_failure": "Mobile and online banking down",
                  "natural_disaster": "Typhoon Signal No. 8 in force"},
        "message": "Transfers are paused; ATMs and branches can show balances.",
        "reason": "the database failover needs checks",
        "name": "Chan Tai Man",
        "status": "investigating",
    },
}
# What the real context carries in incident.affected and incident.regions: ids, not words.
RAW_REGIONS = ["hong-kong", "guangdong"]
REF = "INC-20261124-A1B2C3"
ETA = "2026-11-24 16:30 CST"
PREVIOUS_ETA = "2026-11-24 15:30 CST"
NEXT_UPDATE = "2026-11-24 15:30 CST"
RESOLVED_AT = "2026-11-24 16:05 CST"
ORG_HOTLINE = "95000"  # five digits, the length of a real 95xxx service number


def make_env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(TEMPLATES)),
        undefined=StrictUndefined,
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # The filters the toolkit's renderer gives its templates (incident/rendering.py).
    env.filters.update(spoken_digits=spoken_digits, without_year=without_year)
    return env


ENV = make_env()


def playbook_files() -> list[Path]:
    return sorted(PLAYBOOKS.glob("*.yaml"))


def load(playbook_id: str) -> Playbook:
    return load_playbook(PLAYBOOKS / f"{playbook_id}.yaml")


def context(book: Playbook, lang: str, phase: str, *, known: bool = True, drill: bool = False,
            message: bool = True, workaround: bool = True, hotline: bool = True,
            counters: bool = True, previous: bool = True, name: str | None = None,
            title: str | None = None) -> dict[str, Any]:
    """A template context as the renderer's contract describes it, localized to `lang`."""
    sample = SAMPLE[lang]
    template_set = book.notices.template_set
    manual = book.principles.minimal_impact.manual_channel
    return {
        "lang": lang,
        "org": {"name": sample["org"], "hotline": ORG_HOTLINE,
                "website": "https://www.example.com"},
        "incident": {
            "id": REF, "ref": REF, "title": title or sample["title"][template_set],
            "severity": book.severity.default,
            "severity_name": book.level(book.severity.default).name.get(lang),
            "status": sample["status"], "kind": template_set,
            "detected_at": "2026-11-24 14:05 CST", "declared_at": "2026-11-24 14:12 CST",
            "affected": list(book.affected_services), "regions": list(RAW_REGIONS),
            "drill": drill,
        },
        "notice": {"phase": phase, "message": sample["message"] if message else "",
                   "at": "2026-11-24 14:30 CST"},
        "eta": {"known": known, "at": ETA if known else "",
                "previous": PREVIOUS_ETA if phase == "eta_changed" and previous else "",
                "reason": sample["reason"] if phase == "eta_changed" else ""},
        "next_update": "" if phase == "resolved" else NEXT_UPDATE,
        "manual": {
            "open": True,
            "hotline": (manual.hotline or "") if hotline else "",
            "counters": manual.counters.get(lang) if manual.counters and counters else "",
            "hours": manual.hours.get(lang),
            "workaround": manual.workaround.get(lang) if manual.workaround and workaround
            else "",
        },
        "branches": (BRANCHES[lang] if template_set == "natural_disaster"
                     else {"closed": [], "open": []}),
        "playbook": {key: getattr(book, key).get(lang)
                     for key in ("name", "summary", "impact", "measures", "advice")},
        "customer": {"name": name or sample["name"], "ref": "C0001"},
        "resolved": {"at": RESOLVED_AT if phase == "resolved" else ""},
    }


# A disaster notice started with a branch list names the closed branches and open ones nearby.
BRANCHES = {
    "zh-CN": {"closed": ["中环支行", "尖沙咀支行"],
              "open": [{"name": "铜锣湾支行", "distance_km": 3.1}]},
    "zh-HK": {"closed": ["中環分行", "尖沙咀分行"],
              "open": [{"name": "銅鑼灣分行", "distance_km": 3.1}]},
    "en": {"closed": ["Central Branch", "Tsim Sha Tsui Branch"],
           "open": [{"name": "Causeway Bay Branch", "distance_km": 3.1}]},
}


def render(template_set: str, phase: str, lang: str, ctx: dict[str, Any]) -> dict[str, str]:
    """Render the four parts of one notice: subject, text, html, sms."""
    out = {}
    for key, part in zip(("subject", "text", "html", "sms"), PARTS, strict=True):
        name = f"{template_set}/{phase}/{part.format(lang=lang)}"
        out[key] = ENV.get_template(name).render(ctx)
    return out


def gsm7_septets(text: str) -> int | None:
    """Septets of `text` in GSM-7, or None if it needs UCS-2."""
    if not all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        return None
    return sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)


# ------------------------------------------------------------------------------- playbooks


def test_exactly_the_six_playbooks_ship() -> None:
    assert {path.stem for path in playbook_files()} == set(PLAYBOOK_IDS)


@pytest.mark.parametrize("path", playbook_files(), ids=lambda p: p.stem)
def test_playbook_validates_and_is_complete(path: Path) -> None:
    book = load_playbook(path)
    assert book.id == path.stem
    assert book.kind.value == PLAYBOOK_IDS[book.id]
    assert book.notices.template_set == book.kind.value
    assert book.notices.channels == ["email", "sms"]
    assert set(book.notices.phases) == set(PHASES)
    assert book.affected_services

    # Severity: grades I-IV, each bilingual; grade I promises more frequent updates.
    assert [level.id for level in book.severity.levels] == ["I", "II", "III", "IV"]
    grade_one = book.level("I")
    assert grade_one.update_every is not None
    assert grade_one.update_every < book.principles.transparency.update_every

    principles = book.principles
    assert principles.fast_response.first_notice_within <= timedelta(hours=1)
    manual = principles.minimal_impact.manual_channel
    # The hotline is the institution's (organisation.hotline), not the playbook's to fix.
    assert manual.hotline is None and manual.counters and manual.workaround
    assert set(principles.coordination.parties) <= PARTIES
    assert {"tech_support", "compliance", "regulator"} <= set(principles.coordination.parties)
    duties = principles.coordination.regulator
    assert duties and all(duty.source.strip() for duty in duties)

    # Steps: 8-14 (regulator duties are checklist items of their own), known roles, the four
    # actions, the post-incident report last.
    assert 8 <= len(book.steps) <= 14
    assert {step.owner for step in book.steps} <= ROLES
    actions = [step.action for step in book.steps if step.action]
    assert sorted(actions) == ["declare", "notify_customers", "notify_parties",
                               "open_manual_channel"]
    assert not any(step.id.startswith("regulator-") for step in book.steps)
    first_notice = next(s for s in book.steps if s.action == "notify_customers")
    assert first_notice.due <= principles.fast_response.first_notice_within
    assert book.steps[-1].id == "post-incident-report"

    assert set(book.audience.products) <= PRODUCTS
    assert set(book.audience.regions) <= REGIONS


@pytest.mark.parametrize("playbook_id", [k for k, v in PLAYBOOK_IDS.items()
                                         if v == "system_failure"])
def test_system_failures_carry_the_2008_reporting_duties(playbook_id: str) -> None:
    book = load(playbook_id)
    duties = {d.id: d for d in book.principles.coordination.regulator}
    first, written, progress = (duties["nfra-first-report"], duties["nfra-written-report"],
                                duties["nfra-progress-report"])
    assert first.within == timedelta(minutes=60) and first.grades == []
    assert written.within == timedelta(hours=12) and written.grades == []
    assert progress.every == timedelta(hours=2) and progress.grades == ["I"]
    assert all("2008" in d.source for d in (first, written, progress))
    assert book.principles.fast_response.first_notice_within == timedelta(minutes=30)
    assert book.update_every("I") == timedelta(minutes=30)
    assert book.update_every("II") == timedelta(minutes=60)


def test_core_banking_carries_dora_for_major_grades() -> None:
    duties = {d.id: d for d in load("core-banking-outage").principles.coordination.regulator}
    expected = {"dora-initial-notification": timedelta(hours=4),
                "dora-intermediate-report": timedelta(hours=72),
                "dora-final-report": timedelta(days=30)}
    for duty_id, within in expected.items():
        assert duties[duty_id].within == within
        assert duties[duty_id].grades == ["I", "II"]
        assert "DORA" in duties[duty_id].source
    assert "DORA" in (PLAYBOOKS / "core-banking-outage.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize("playbook_id", [k for k, v in PLAYBOOK_IDS.items()
                                         if v == "natural_disaster"])
def test_natural_disasters_cite_order_no_10(playbook_id: str) -> None:
    book = load(playbook_id)
    assert any("2020年第10号" in d.source for d in book.principles.coordination.regulator)
    assert book.audience.products == [] and book.audience.regions == []
    assert "facilities" in book.principles.coordination.parties


@pytest.mark.parametrize("playbook_id", ["typhoon", "rainstorm-flood"])
def test_hkab_reopening_rule_is_told_to_customers(playbook_id: str) -> None:
    book = load(playbook_id)
    assert "12" in book.measures.zh_CN and "2小时" in book.measures.zh_CN
    assert "12:00 noon" in book.measures.en and "two hours" in book.measures.en


def test_audience_filters_of_system_failures() -> None:
    assert load("core-banking-outage").audience.products == []
    assert set(load("online-banking-outage").audience.products) == {"mobile_banking",
                                                                    "internet_banking"}
    assert set(load("card-payments-outage").audience.products) == {"debit_card", "credit_card"}


# ------------------------------------------------------------------------------- templates


@pytest.mark.parametrize("template_set", SETS)
def test_template_set_is_complete(template_set: str) -> None:
    expected = {f"{phase}/{part.format(lang=lang)}"
                for phase, part, lang in itertools.product(PHASES, PARTS, LANGS)}
    found = {str(p.relative_to(TEMPLATES / template_set))
             for p in (TEMPLATES / template_set).rglob("*") if p.is_file()}
    assert len(expected) == 48
    assert expected <= found, sorted(expected - found)


def all_template_names() -> list[str]:
    """Notice templates (customer and internal) and their shared layouts and partials."""
    return sorted(str(p.relative_to(TEMPLATES)) for p in TEMPLATES.rglob("*")
                  if p.is_file() and p.suffix in {".txt", ".html"}
                  and p.relative_to(TEMPLATES).parts[0] in {*SETS, "internal", "_layouts",
                                                             "_partials"})


def bound_names(ast: nodes.Template) -> set[str]:
    """Names a template binds itself: {% set %}, macros and their parameters, imported macros."""
    names = {n.name for a in ast.find_all(nodes.Assign) for n in a.find_all(nodes.Name)}
    macros = list(ast.find_all(nodes.Macro))
    names |= {macro.name for macro in macros}
    names |= {arg.name for m in [*macros, *ast.find_all(nodes.CallBlock)] for arg in m.args}
    if macros:
        names.add("caller")  # the body of a {% call %} block, inside the macro it calls
    for imported in ast.find_all(nodes.FromImport):
        names |= {n[1] if isinstance(n, tuple) else n for n in imported.names}
    names |= {imported.target for imported in ast.find_all(nodes.Import)}
    for loop in ast.find_all(nodes.For):
        targets = [loop.target, *loop.target.find_all(nodes.Name)]
        names |= {n.name for n in targets if isinstance(n, nodes.Name)}
    return names | {"self", "loop"}


@pytest.mark.parametrize("name", all_template_names())
def test_templates_use_only_the_documented_context(name: str) -> None:
    """Static check of every branch, including ones a sample context does not reach."""
    source = (TEMPLATES / name).read_text(encoding="utf-8")
    ast = ENV.parse(source, name=name)
    bound = bound_names(ast)
    schema = INTERNAL_SCHEMA if name.startswith("internal/") else CONTEXT_SCHEMA
    for node in ast.find_all(nodes.Name):
        if node.ctx == "load":
            assert node.name in schema or node.name in bound, node.name
    for node in ast.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name in schema:
            allowed = schema[node.node.name]
            assert allowed is not None and node.attr in allowed, f"{node.node.name}.{node.attr}"
            if name.split("/")[-1].startswith("sms."):
                assert (node.node.name, node.attr) != ("customer", "ref"), "customer.ref in SMS"


CASES = [(pid, phase, lang) for pid in PLAYBOOK_IDS for phase in PHASES for lang in LANGS]
VARIANTS = [dict(known=k, drill=d, message=m, workaround=w)
            for k, d, m, w in itertools.product([True, False], repeat=4)]
VARIANTS += [dict(hotline=False), dict(counters=False, workaround=False),
             dict(previous=False), dict(previous=False, known=False)]


@pytest.mark.parametrize(("playbook_id", "phase", "lang"), CASES,
                         ids=["-".join(c) for c in CASES])
def test_every_notice_renders_with_the_required_facts(playbook_id: str, phase: str,
                                                      lang: str) -> None:
    book = load(playbook_id)
    template_set = book.notices.template_set
    for variant in VARIANTS:
        ctx = context(book, lang, phase, **variant)
        out = render(template_set, phase, lang, ctx)
        where = f"{playbook_id}/{phase}/{lang} {variant}"
        hotline = ctx["manual"]["hotline"] or ctx["org"]["hotline"]
        subject, text, html, sms = out["subject"], out["text"], out["html"], out["sms"]

        # Subject: one line with the title and the reference.
        assert "\n" not in subject.strip(), where
        assert ctx["incident"]["title"] in subject and REF in subject, where

        for body in (text, html, sms):
            assert ctx["customer"]["name"] in body, where
            assert REF in body, where
            assert hotline in body, where
            for leftover in ("{{", "{%", "None", "[]", "Undefined"):
                assert leftover not in body, (where, leftover)
        for body in (text, html):
            assert FOOTER[lang] in body, where
            if phase == "resolved":
                continue  # the manual channel closes; the hotline stays for questions
            # The closed branches and the open ones nearby, in disaster notices.
            for closed in ctx["branches"]["closed"]:
                assert closed in body, (where, closed)
            for near in ctx["branches"]["open"]:
                assert near["name"] in body and str(near["distance_km"]) in body, where
            # The manual channel in full, each part only when it has a value.
            assert ctx["manual"]["hours"] in body, where
            for part in ("counters", "workaround"):
                value = ctx["manual"][part]
                if value:
                    assert value in body, (where, part)
        assert "C0001" not in sms, f"customer.ref leaked into the SMS: {where}"
        assert "\n" not in sms, where

        # Drill marker at the very start of subject, text body and SMS (after the signature).
        marker = DRILL[lang]
        if variant.get("drill"):
            assert subject.startswith(marker), where
            assert text.startswith(marker), where
            banner = html.index(marker, html.index("<body"))
            assert banner < html.index(ctx["customer"]["name"]), where
            signature = f"【{ctx['org']['name']}】" if lang != "en" else ""
            assert sms.startswith(signature + marker), where
        else:
            for body in out.values():
                assert marker not in body, where

        # Transparency: ETA (or that it is being assessed) and the next update. A Chinese SMS
        # shows times without the year (two segments), and only the new ETA.
        for body in (text, html, sms):
            short_sms = body is sms  # an SMS drops the year (_partials/sms.txt when)

            def shows(time: str, body: str = body, short_sms: bool = short_sms) -> bool:
                return (without_year(time) if short_sms else time) in body

            if phase == "resolved":
                assert shows(RESOLVED_AT), where
                reconciled = RECONCILED[lang]
                reconciled = (reconciled,) if isinstance(reconciled, str) else reconciled
                assert any(word in body for word in reconciled), where
            else:
                if ctx["eta"]["known"]:
                    assert shows(ETA), where
                else:
                    assert ASSESSING[lang] in body or (short_sms and "待定" in body), where
                assert shows(NEXT_UPDATE), where
            if phase == "eta_changed":
                assert ctx["eta"]["reason"] in body, where
                if ctx["eta"]["previous"] and not (short_sms and ctx["eta"]["known"]):
                    assert shows(PREVIOUS_ETA), where

        # The supervisor's message only when there is one.
        message = SAMPLE[lang]["message"]
        for body in (text, html, sms):
            assert (message in body) == bool(variant.get("message", True)), where

        # Tidy plain text: no runs of blank lines, no empty list items.
        assert "\n\n\n" not in text, where
        assert not re.search(r"^\s*-\s*$", text, re.MULTILINE), where
        assert html.startswith("<!DOCTYPE html>"), where
        assert f'<html lang="{lang}">' in html, where

        if lang == "en":
            assert gsm7_septets(sms) is not None, (where, sms)


@pytest.mark.parametrize(("playbook_id", "phase", "lang"), CASES,
                         ids=["-".join(c) for c in CASES])
def test_sms_fits_the_segment_budget(playbook_id: str, phase: str, lang: str) -> None:
    """Realistic values: English <= 2 GSM-7 segments, Chinese <= 3 UCS-2 segments."""
    book = load(playbook_id)
    for drill, message in itertools.product([False, True], [False, True]):
        ctx = context(book, lang, phase, drill=drill, message=message)
        if phase == "eta_changed" and message:
            ctx["notice"]["message"] = ctx["eta"]["reason"]  # what `incident eta` records
        sms = render(book.notices.template_set, phase, lang, ctx)["sms"]
        if lang == "en":
            septets = gsm7_septets(sms)
            assert septets is not None, sms
            assert septets <= 306, (septets, sms)
        else:
            assert len(sms) <= 201, (len(sms), sms)


@pytest.mark.parametrize("playbook_id", PLAYBOOK_IDS)
def test_customers_never_see_raw_ids(playbook_id: str) -> None:
    """incident.affected and incident.regions are ids (counter_services, hong-kong): no notice
    shows them; playbook.impact says in words what is affected."""
    book = load(playbook_id)
    template_set = book.notices.template_set
    for phase, lang in itertools.product(PHASES, LANGS):
        out = render(template_set, phase, lang, context(book, lang, phase))
        bare = context(book, lang, phase)
        bare["incident"]["affected"], bare["incident"]["regions"] = [], []
        assert render(template_set, phase, lang, bare) == out, (phase, lang)
        for raw in [*book.affected_services, *RAW_REGIONS]:
            if not raw.isalpha():  # "branches" or "atms" may stand in prose as words
                for part, body in out.items():
                    assert raw not in body, (phase, lang, part, raw)


@pytest.mark.parametrize("template_set", SETS)
@pytest.mark.parametrize("lang", LANGS)
def test_customer_fields_are_escaped_in_html_and_never_evaluated(template_set: str,
                                                                 lang: str) -> None:
    book = load(next(k for k, v in PLAYBOOK_IDS.items() if v == template_set))
    for phase in PHASES:
        hostile = context(book, lang, phase, name="<script>alert(1)</script>",
                          title="Cards & ATMs <b>down</b>")
        out = render(template_set, phase, lang, hostile)
        assert "<script>" not in out["html"]
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out["html"]
        assert "Cards &amp; ATMs &lt;b&gt;down&lt;/b&gt;" in out["html"]
        assert "<script>alert(1)</script>" in out["text"]  # plain text is not escaped

        literal = context(book, lang, phase, name="{{ 7*7 }}", title="{% if true %}x{% endif %}")
        out = render(template_set, phase, lang, literal)
        for key in ("text", "html", "sms"):
            assert "{{ 7*7 }}" in out[key], (phase, key)
            assert "{% if true %}x{% endif %}" in out[key] or key == "sms", (phase, key)


@pytest.mark.parametrize("template_set", SETS)
def test_html_is_self_contained(template_set: str) -> None:
    layout = (TEMPLATES / "_layouts" / "email.html").read_text(encoding="utf-8")
    assert "{% block title %}" in layout and "{% block body %}" in layout
    book = load(next(k for k, v in PLAYBOOK_IDS.items() if v == template_set))
    for phase, lang in itertools.product(PHASES, LANGS):
        html = render(template_set, phase, lang, context(book, lang, phase, drill=True))["html"]
        assert html.count("<title>") == 1 and "<title>" + DRILL[lang] in html
        for external in ("<link", "<script", "<img", "<style", "url(", "@import", "src="):
            assert external not in html, (phase, lang, external)


# ------------------------------------------------------------------------------- examples

HEADER = ["id", "name", "email", "phone", "language", "segment", "region", "branch",
          "products", "priority"]


def read_rows(name: str) -> list[dict[str, str]]:
    with (EXAMPLES / name).open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == HEADER
        return [dict(zip(HEADER, row, strict=True)) for row in reader]


def check_row(row: dict[str, str]) -> None:
    assert row["id"] and row["name"]
    assert row["email"] or row["phone"], row
    if row["email"]:
        domain = row["email"].rpartition("@")[2]
        assert domain in {"example.com", "example.org", "example.net"}, row
        validate_email(row["email"], check_deliverability=False)
    if row["phone"]:
        number = phonenumbers.parse(row["phone"])
        assert phonenumbers.is_valid_number(number), row
        assert phonenumbers.number_type(number) in {
            phonenumbers.PhoneNumberType.MOBILE,
            phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}, row
        assert row["phone"] == phonenumbers.format_number(
            number, phonenumbers.PhoneNumberFormat.E164), row
    assert row["language"] in LANGS
    assert row["region"] in REGIONS
    assert row["priority"] in {"urgent", "normal"}
    assert set(row["products"].split(";")) <= PRODUCTS, row


def test_example_customers() -> None:
    rows = read_rows("customers.csv")
    assert len(rows) == 40
    assert len({r["id"] for r in rows}) == 40
    for row in rows:
        check_row(row)
        assert row["segment"] in {"retail", "private", "sme", "corporate"}
    assert {r["segment"] for r in rows} == {"retail", "private", "sme", "corporate"}
    assert {r["region"] for r in rows} == REGIONS
    assert {r["language"] for r in rows} == set(LANGS)
    urgent = sum(r["priority"] == "urgent" for r in rows)
    assert 4 <= urgent <= 8
    assert any(r["email"] and not r["phone"] for r in rows)
    assert any(r["phone"] and not r["email"] for r in rows)
    assert any(r["phone"].startswith("+852") for r in rows)
    # English SMS must stay GSM-7: names of English-language customers with a phone too.
    for row in rows:
        if row["language"] == "en" and row["phone"]:
            assert gsm7_septets(row["name"]) is not None, row


def test_drill_contacts() -> None:
    rows = read_rows("drill.csv")
    assert len(rows) == 4
    for row in rows:
        check_row(row)
        assert row["segment"] == "staff"
        assert row["email"].endswith("@example.com")
