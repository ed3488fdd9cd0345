"""Optional DKIM signing (channels.email.dkim): every email carries a signature that dkimpy
verifies against the public key (published in DNS in real life, passed in here); a key that
cannot sign is refused before anything is recorded."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import dkim

from cli_fixtures import Workspace

SELECTOR = "incident2026"


def _keys(folder: Path) -> tuple[Path, bytes]:
    """A fresh 2048-bit RSA key file, and the TXT record publishing its public key."""
    key = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def _sign_with(ws: Workspace, key_file: str) -> None:
    ws.configure(lambda cfg: cfg["channels"]["email"].update(
        dkim={"selector": SELECTOR, "domain": "example.com", "key_file": key_file}))


def test_every_email_is_signed_and_verifies_against_the_public_key(sqlite_ws: Workspace) -> None:
    _, record = _keys(sqlite_ws.root)
    _sign_with(sqlite_ws, "dkim.pem")  # relative to incident.yaml
    sqlite_ws.write_customers([
        f"c1,{'欧阳' * 200},c1@example.com,,zh-CN,retail,guangdong,gd,savings,",
        "c2,Mary Chan,mary@example.com,,en,retail,guangdong,gd,savings,"])
    incident_id = sqlite_ws.json("start", "core-banking-outage", "--title", "核心系统故障")["id"]
    asked: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return record

    files = sqlite_ws.outbox_files(incident_id, "eml")
    assert len(files) == 2
    for path in files:
        data = path.read_bytes()
        assert data.startswith(b"DKIM-Signature: ")
        assert b"d=example.com" in data.split(b"\r\n\r\n")[0]
        assert dkim.verify(data, dnsfunc=dns), path
        # Whatever a relay may not change: a changed subject no longer verifies.
        assert not dkim.verify(data.replace(b"Subject: ", b"Subject: Re: ", 1), dnsfunc=dns)
    assert set(asked) == {f"{SELECTOR}._domainkey.example.com.".encode()}


def test_a_key_that_cannot_sign_is_refused_before_anything_is_recorded(
        sqlite_ws: Workspace) -> None:
    (sqlite_ws.root / "bad.pem").write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n"
                                            "-----END RSA PRIVATE KEY-----\n")
    for key_file, reason in (("missing.pem", "No such file"), ("bad.pem", "cannot sign")):
        _sign_with(sqlite_ws, key_file)
        result = sqlite_ws.run("start", "core-banking-outage", "--title", "x", code=2)
        assert "channels.email.dkim.key_file" in result.stderr and reason in result.stderr
        assert "Traceback" not in result.stderr
    assert sqlite_ws.json("list", "--all") == []
