"""Customer data is data: escaped in HTML, never evaluated as a template, masked in output."""

from __future__ import annotations

import email
import email.policy
import json

import pytest

from cli_fixtures import Workspace

NAMES = ["<script>alert(1)</script>", "{{ 7*7 }}", "{% raw %}x{% endraw %}"]


@pytest.mark.parametrize("name", NAMES)
def test_hostile_names_arrive_escaped_and_unevaluated_in_every_notice(
        ws: Workspace, name: str) -> None:
    # A frozen clock whose times contain no "49", so that an evaluated {{ 7*7 }} stands out.
    ws.freeze("2026-11-24T02:00:00Z")
    quoted = '"' + name.replace('"', '""') + '"'
    ws.write_customers([
        f"c1,{quoted},victim@example.com,+8613800138000,zh-CN,retail,guangdong,gd,savings,normal",
        f"c2,{quoted},victim2@example.com,+85291234567,en,retail,hong-kong,hk,savings,normal",
    ])
    incident_id = ws.json("start", "core-banking-outage", "--title", "Core down", "--eta",
                          "2h")["id"]
    ws.run("update", incident_id, "-m", "progress")
    ws.run("eta", incident_id, "4h", "--reason", "slower")
    ws.run("resolve", incident_id, "-m", "restored")
    emls = ws.outbox_files(incident_id, "eml")
    assert len(emls) == 8  # 2 customers × 4 notices
    for path in emls:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content()
        assert "<script>" not in html
        if "<script>" in name:
            assert "&lt;script&gt;" in html
        assert name in text  # plain text carries the name as written
        assert "49" not in text.replace(incident_id, "")  # {{ 7*7 }} never evaluated
    for path in ws.outbox_files(incident_id, "json"):
        body = json.loads(path.read_text("utf-8"))["body"]
        assert "49" not in body.replace(incident_id, "")


def test_contacts_never_appear_in_terminal_output(ws: Workspace) -> None:
    ws.write_customers([
        "c1,赵敏,zhao.min@example.com,+8613800138000,zh-CN,retail,guangdong,gd,savings,urgent"])
    outputs = []
    start = ws.run("start", "core-banking-outage", "--title", "Core down", "--eta", "2h")
    outputs.append(start.output)
    incident_id = ws.json("list")[0]["id"]
    for args in (["status", incident_id], ["timeline", incident_id], ["list"],
                 ["--json", "status", incident_id], ["--json", "timeline", incident_id]):
        outputs.append(ws.run(*args).output)
    joined = "\n".join(outputs)
    assert "zhao.min@example.com" not in joined
    assert "13800138000" not in joined
