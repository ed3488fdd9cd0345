"""The bounce parser over a corpus written from RFC 3464 and published examples
(tests/data/bounces/README.md), mbox and Maildir sources, and malformed input."""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from incident.bounces import Kind, Severity, parse_bounce, read_sources
from incident.bounces.model import MAX_DIAGNOSTIC, MAX_MESSAGE_BYTES
from incident.errors import BadInput

CORPUS = Path(__file__).parent / "data" / "bounces"
MID = "<INC-20261124-3F2A7C.0123456789abcdef01234567@bank.example>"
KEY = "5f2c1e9a7b3d4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9012a3b4c5d6e7f"


@pytest.mark.parametrize(("name", "kind", "severity", "status", "recipient"), [
    ("postfix-hard.eml", Kind.DSN, Severity.HARD, "5.1.1", "li.na@customer.example"),
    ("exchange-hard.eml", Kind.DSN, Severity.HARD, "5.1.10", "chen.jie@customer.example"),
    ("gmail-delayed.eml", Kind.DSN, Severity.SOFT, "4.4.2", "zhou.min@customer.example"),
    ("exim-hard.eml", Kind.NON_STANDARD, Severity.HARD, "5.1.1", "wang.fang@customer.example"),
    ("outlook-ndr-text.eml", Kind.NON_STANDARD, Severity.HARD, "5.1.1",
     "sun.li@corp.customer.example"),
    ("qq-hard.eml", Kind.NON_STANDARD, Severity.HARD, "", "wu.hao@qq.example"),
])
def test_corpus_classified_and_matched_by_message_id(name: str, kind: Kind, severity: Severity,
                                                     status: str, recipient: str) -> None:
    parsed = parse_bounce((CORPUS / name).read_bytes())
    assert (parsed.kind, parsed.severity) == (kind, severity)
    assert parsed.message_ids == (MID,)  # the original's, never the bounce's own
    failure = parsed.first_failure
    assert failure is not None
    assert (failure.status, failure.recipient) == (status, recipient)
    assert failure.diagnostic and "\n" not in failure.diagnostic


def test_qq_style_gb18030_bounce_read_in_its_charset() -> None:
    parsed = parse_bounce((CORPUS / "qq-hard.eml").read_bytes())
    assert parsed.subject == "系统退信"
    assert parsed.first_failure is not None and "550" in parsed.first_failure.diagnostic


def test_exim_delay_to_a_verp_address_is_soft_and_carries_the_key() -> None:
    parsed = parse_bounce((CORPUS / "exim-verp-soft.eml").read_bytes())
    assert parsed.severity is Severity.SOFT
    assert parsed.first_failure is not None and parsed.first_failure.action == "delayed"
    assert parsed.verp_keys == (KEY,) and parsed.message_ids == ()
    # another prefix configured: the same address is not ours
    assert parse_bounce((CORPUS / "exim-verp-soft.eml").read_bytes(),
                        verp_prefix="return").verp_keys == ()


def test_bounce_without_references_and_auto_reply_are_not_matched() -> None:
    unmatched = parse_bounce((CORPUS / "unmatched.eml").read_bytes())
    assert unmatched.severity is Severity.HARD
    assert (unmatched.message_ids, unmatched.verp_keys) == ((), ())
    reply = parse_bounce((CORPUS / "auto-reply.eml").read_bytes())
    assert reply.kind is Kind.NOT_A_BOUNCE and reply.severity is None


def test_identity_is_the_own_message_id_else_a_hash_of_the_bytes() -> None:
    data = (CORPUS / "postfix-hard.eml").read_bytes()
    assert parse_bounce(data).identity == "message-id:<20261124020311.8B7F4201A4@mx1.bank.example>"
    without = data.replace(b"Message-Id: <20261124020311.8B7F4201A4@mx1.bank.example>\n", b"")
    first, again = parse_bounce(without).identity, parse_bounce(without).identity
    assert first == again and first.startswith("sha256:") and len(first) == 7 + 64
    assert parse_bounce(without + b"\n").identity != first


def test_action_delivered_is_not_a_failure_and_failed_4xx_is_soft() -> None:
    data = (CORPUS / "postfix-hard.eml").read_bytes()
    delivered = parse_bounce(data.replace(b"Action: failed", b"Action: delivered"))
    assert delivered.kind is Kind.DSN and delivered.severity is None
    transient = parse_bounce(data.replace(b"Status: 5.1.1", b"Status: 4.2.2"))
    assert transient.severity is Severity.SOFT


@pytest.mark.parametrize(("data", "why"), [
    ((CORPUS / "malformed-no-boundary.eml").read_bytes(), "delivery-status part"),
    (b"From: MAILER-DAEMON@x\nContent-Type: multipart/report; report-type=delivery-status; "
     b"boundary=b\n\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; x\n--b--\n",
     "names no recipient"),
    (b"X" * (MAX_MESSAGE_BYTES + 1), "larger than"),
])
def test_malformed_input_is_a_problem_not_a_crash(data: bytes, why: str) -> None:
    parsed = parse_bounce(data)
    assert parsed.kind is Kind.PROBLEM and parsed.problem and why in parsed.problem


def test_garbage_never_raises() -> None:
    samples = [b"", b"\x00\xff\xfe", b"Content-Type: multipart/report; boundary=\"\n\n--",
               b"Content-Type: message/rfc822\n\n\xff\x00", b"Subject: =?x-unknown?B?!!!?=\n\n",
               b"Content-Type: text/plain; charset=no-such-charset\n"
               b"Content-Transfer-Encoding: base64\n\n!!!!"]
    for data in samples:
        parse_bounce(data)  # any result, never an exception


def test_diagnostic_stripped_of_control_characters_and_bounded() -> None:
    data = (CORPUS / "postfix-hard.eml").read_bytes().replace(
        b"Diagnostic-Code: smtp; 550 5.1.1",
        b"Diagnostic-Code: smtp; 550 5.1.1 \x1b[31mRED\x1b[0m \x07" + b"y" * 2000)
    diagnostic = parse_bounce(data).recipients[0].diagnostic
    assert "\x1b" not in diagnostic and "\x07" not in diagnostic
    assert "RED" in diagnostic and len(diagnostic) <= MAX_DIAGNOSTIC


def test_mbox_and_maildir_sources(tmp_path: Path) -> None:
    names = ["postfix-hard.eml", "exim-hard.eml", "qq-hard.eml"]
    box = mailbox.mbox(str(tmp_path / "bounces.mbox"))
    maildir = mailbox.Maildir(str(tmp_path / "Maildir"))
    for name in names:
        box.add((CORPUS / name).read_bytes())
        maildir.add((CORPUS / name).read_bytes())
    box.close()
    from_mbox = list(read_sources([tmp_path / "bounces.mbox"]))
    assert [m.where for m in from_mbox] == [f"{tmp_path / 'bounces.mbox'}#{n}" for n in (1, 2, 3)]
    from_maildir = list(read_sources([tmp_path / "Maildir"]))
    for messages in (from_mbox, from_maildir):
        parsed = [parse_bounce(m.data or b"") for m in messages]
        assert sorted(p.subject for p in parsed) == sorted(
            parse_bounce((CORPUS / n).read_bytes()).subject for n in names)
        assert all(p.message_ids == (MID,) for p in parsed)
    # a single file and a directory of .eml files
    assert len(list(read_sources([CORPUS]))) == len(list(CORPUS.glob("*.eml")))
    assert [m.where for m in read_sources([CORPUS / names[0]])] == [str(CORPUS / names[0])]


def test_missing_source_is_bad_input_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"no-such\.mbox"):
        list(read_sources([CORPUS / "postfix-hard.eml", tmp_path / "no-such.mbox"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(p.name for p in CORPUS.glob("*.eml"))),
       cut=st.integers(min_value=0, max_value=6000), junk=st.binary(max_size=200))
def test_any_damaged_corpus_message_is_read_without_raising(name: str, cut: int,
                                                            junk: bytes) -> None:
    data = (CORPUS / name).read_bytes()
    parsed = parse_bounce(data[:cut] + junk + data[cut:])
    for recipient in parsed.recipients:
        assert len(recipient.diagnostic) <= MAX_DIAGNOSTIC
        assert not any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in recipient.diagnostic)
    assert all(len(i) <= 250 for i in parsed.message_ids)
