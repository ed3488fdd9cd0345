"""Start and stop the real servers the tests talk to: PostgreSQL, Postfix's smtp-sink and Prism.

Plain functions with no pytest dependency (tests/conftest.py wraps them in fixtures), so they
can also be used from a REPL or a benchmark script. Every server listens on 127.0.0.1 on a port
the OS picked. Each ``start_*`` either returns a server that answers, or stops what it started
and raises ``RuntimeError`` saying what went wrong (with the tail of the server's log) or which
binary is missing and which script installs it.

The binaries are installed by ``scripts/install-test-deps.sh`` (run by ``scripts/test.sh``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PRISM_BIN = REPO_ROOT / ".cache" / "prism" / "node_modules" / ".bin" / "prism"
INSTALL_HINT = "run scripts/install-test-deps.sh (scripts/test.sh does this for you)"

PORT_ATTEMPTS = 5
SMTP_BACKLOG = 100
PG_DATABASE = "incident_test"
PG_SERVER_OPTIONS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


# --- helpers -----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller retries on a collision)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(could not read {path}: {e})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def _stop_process(proc: subprocess.Popen[bytes], *, group: bool, timeout: float = 10) -> None:
    """SIGTERM the process (or its whole process group), then SIGKILL if it does not go."""
    if proc.poll() is not None:
        return

    def send(sig: int) -> None:
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=timeout)


# --- PostgreSQL --------------------------------------------------------------------------------


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,)
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


def find_postgres_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres: from PATH, else the highest version
    under /usr/lib/postgresql/*/bin (where Debian puts them, off PATH)."""
    candidates: list[Path] = []
    for name in ("pg_ctl", "initdb"):
        found = shutil.which(name)
        if found:
            candidates.append(Path(found).parent)
            candidates.append(Path(found).resolve().parent)  # /usr/local/bin/x -> .../15/bin/x
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for d in candidates:
        if all(os.access(d / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return d
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
        "/usr/lib/postgresql/*/bin. Install Debian's postgresql-15: " + INSTALL_HINT
    )


@dataclass
class PostgresServer:
    url: str  # SQLAlchemy URL of the database incident_test
    host: str
    port: int
    data_dir: Path
    log_path: Path
    bindir: Path
    run_as: str | None  # OS user running the server (``postgres`` when the tests run as root)
    _stopped: bool = field(default=False, repr=False)

    @property
    def conninfo(self) -> str:
        """libpq/psycopg connection string for the maintenance database ``postgres``."""
        return f"host={self.host} port={self.port} user=postgres dbname=postgres"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.run_as:
            # Another pytest session of the same user resets /tmp/pytest-of-<user> to 0700.
            _make_traversable(self.data_dir.parent.parent)
        proc = _run_pg(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
            self.run_as,
            cwd=self.data_dir.parent,
            check=False,
        )
        if proc.returncode != 0:
            _signal_postmaster(self.data_dir, signal.SIGINT)  # what pg_ctl -m fast sends


def _signal_postmaster(data_dir: Path, sig: int, timeout: float = 30) -> None:
    """Fallback for pg_ctl: signal the postmaster named in postmaster.pid and wait for it."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, sig)
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)  # pg_ctl -m immediate


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _run_pg(
    cmd: list[str], run_as: str | None, *, cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    if run_as:
        cmd = ["runuser", "-u", run_as, "--", *cmd]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_"))}
    env["LANG"] = "C.UTF-8"
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return proc


def _make_traversable(path: Path) -> None:
    """As root, let the ``postgres`` user reach ``path``: add o+x (search only, not read) to it
    and to each ancestor owned by us that lacks it (e.g. pytest's 0700 /tmp/pytest-of-root)."""
    uid = os.geteuid()
    for p in [path, *path.parents]:
        st = p.stat()
        if st.st_uid == uid and not st.st_mode & 0o001:
            p.chmod((st.st_mode & 0o7777) | 0o001)


def start_postgres(base_dir: Path) -> PostgresServer:
    """initdb a fresh cluster in ``base_dir/pg`` and start it on a free port on 127.0.0.1, with
    durability switched off for speed; creates the database ``incident_test``."""
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover - psycopg is in the dev extra
        raise RuntimeError("psycopg is not installed: pip install -e '.[dev,postgres]'") from e

    bindir = find_postgres_bindir()
    run_as: str | None = None
    root = Path(base_dir).resolve() / "pg"
    data_dir, sock_dir, log_path = root / "data", root / "sock", root / "postgres.log"
    if data_dir.exists() and any(data_dir.iterdir()):
        raise RuntimeError(f"{data_dir} already holds a cluster: use a new base_dir")
    root.mkdir(parents=True, exist_ok=True)
    sock_dir.mkdir(exist_ok=True)

    if _is_root():
        # initdb and postgres refuse to run as root.
        run_as = "postgres"
        if shutil.which("runuser") is None:
            raise RuntimeError("running as root needs runuser (util-linux) to start PostgreSQL")
        try:
            import pwd

            pw = pwd.getpwnam(run_as)
        except KeyError:
            raise RuntimeError(
                "running as root, PostgreSQL must run as the OS user 'postgres', which does not "
                "exist: " + INSTALL_HINT + " (it creates the user)"
            ) from None
        _make_traversable(root.parent)
        for dirpath, _dirs, files in os.walk(root):
            os.chown(dirpath, pw.pw_uid, pw.pw_gid)
            for f in files:
                os.chown(os.path.join(dirpath, f), pw.pw_uid, pw.pw_gid)
        os.chmod(root, 0o700)

    initdb = [str(bindir / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres",
              "--encoding=UTF8"]  # fmt: skip
    first = _run_pg([*initdb, "--locale=C.UTF-8"], run_as, cwd=root, check=False)
    if first.returncode != 0 and "locale" in first.stdout + first.stderr:
        # The C.UTF-8 locale is missing on some systems: fall back to the plain C locale.
        shutil.rmtree(data_dir, ignore_errors=True)
        try:
            _run_pg([*initdb, "--no-locale"], run_as, cwd=root)
        except RuntimeError as e:
            raise RuntimeError(
                f"initdb failed (first with --locale=C.UTF-8:\n{first.stdout}{first.stderr})\n{e}"
            ) from None
    elif first.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{first.stdout}{first.stderr}")

    last_error = ""
    for _attempt in range(PORT_ATTEMPTS):
        port = free_port()
        opts = f"-h 127.0.0.1 -p {port} -k {sock_dir} {PG_SERVER_OPTIONS}"
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data_dir), "-l", str(log_path),
                  "-w", "-t", "60", "-o", opts, "start"]  # fmt: skip
        proc = _run_pg(pg_ctl, run_as, cwd=root, check=False)
        if proc.returncode == 0:
            break
        last_error = f"{proc.stdout}{proc.stderr}\n--- {log_path} ---\n{_tail(log_path)}"
        # pg_ctl may time out with the server still coming up: make sure nothing is left.
        stop = _run_pg([str(bindir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w",
                        "stop"], run_as, cwd=root, check=False)  # fmt: skip
        if stop.returncode != 0:
            _signal_postmaster(data_dir, signal.SIGQUIT)
        if "already in use" not in last_error:
            break
    if proc.returncode != 0:
        raise RuntimeError(f"PostgreSQL did not start (pg_ctl start failed):\n{last_error}")

    server = PostgresServer(
        url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/{PG_DATABASE}",
        host="127.0.0.1",
        port=port,
        data_dir=data_dir,
        log_path=log_path,
        bindir=bindir,
        run_as=run_as,
    )
    try:
        with psycopg.connect(server.conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    except Exception as e:
        server.stop()
        raise RuntimeError(
            f"PostgreSQL started but creating {PG_DATABASE} failed: {e}\n"
            f"--- {log_path} ---\n{_tail(log_path)}"
        ) from e
    return server


# --- smtp-sink ---------------------------------------------------------------------------------


def find_smtp_sink() -> Path:
    found = shutil.which("smtp-sink")
    if found:
        return Path(found)
    if os.access("/usr/sbin/smtp-sink", os.X_OK):  # Debian puts it off a non-root PATH
        return Path("/usr/sbin/smtp-sink")
    raise RuntimeError(
        "smtp-sink not found (on PATH or /usr/sbin). It comes with Debian's postfix package: "
        + INSTALL_HINT
    )


@dataclass
class SmtpSink:
    host: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def stop(self) -> None:
        _stop_process(self.process, group=False)


def _smtp_greeting(host: str, port: int, timeout: float = 2.0) -> bytes | None:
    """The first line the server sends, b"" if it closed without one; None if no connection."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(1024)
                if not chunk:
                    break
                data += chunk
            if data:
                with contextlib.suppress(OSError):
                    s.sendall(b"QUIT\r\n")
            return data
    except OSError:
        return None


def _listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on 127.0.0.1:``port`` (Linux /proc).
    smtp-sink takes a second to exit when its port is taken, and meanwhile whoever owns the port
    might answer for it. Where /proc cannot tell, assume yes."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return True
    want = {f"0100007F:{port:04X}", f"7F000001:{port:04X}"}  # either byte order
    inodes = {f[9] for f in (line.split() for line in lines) if f[1] in want and f[3] == "0A"}
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def start_smtp_sink(base_dir: Path, *extra_args: str, timeout: float = 15,
                    port: int | None = None) -> SmtpSink:
    """Run Postfix's ``smtp-sink [extra_args] 127.0.0.1:PORT 100`` and wait for its greeting.

    ``extra_args`` are smtp-sink options, e.g. ``"-f", "RCPT"`` to reject RCPT TO with a 5xx,
    ``"-r", "MAIL"`` for a 4xx on MAIL FROM, ``"-d", "%M."`` to dump each message to a file
    (relative to ``base_dir``, which must then be writable by ``nobody`` when run as root).
    Waits for a ``220`` greeting, or for any answer (or a hang-up) if the options make smtp-sink
    reject CONNECT. ``port`` reuses a known port (e.g. a relay that comes back healed).
    """
    binary = find_smtp_sink()
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    user_args = ["-u", "nobody"] if _is_root() else []
    rejects_connect = any("connect" in a.lower() for a in extra_args)
    last_error = ""
    fixed = port
    for _attempt in range(PORT_ATTEMPTS):
        port = fixed or free_port()
        log_path = base_dir / f"smtp-sink-{port}.log"
        cmd = [str(binary), *user_args, *extra_args, f"127.0.0.1:{port}", str(SMTP_BACKLOG)]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd, cwd=base_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        why = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if proc.poll() is not None:
                break
            if not _listens_on(proc.pid, port):  # not yet, or another server owns the port
                continue
            greeting = _smtp_greeting("127.0.0.1", port)
            if greeting is not None and proc.poll() is None:
                if greeting.startswith(b"220") or (
                    rejects_connect and (greeting == b"" or re.match(rb"\d{3}", greeting))
                ):
                    return SmtpSink("127.0.0.1", port, log_path, proc)
                why = f"unexpected greeting {greeting!r}"
                break
        _stop_process(proc, group=False)
        log_text = _tail(log_path)
        last_error = (
            f"{' '.join(cmd)}: {why or 'no greeting'} (exit code {proc.returncode})\n{log_text}"
        ).strip()
        if "in use" not in log_text:
            break
    raise RuntimeError(f"smtp-sink did not start: {last_error}")


# --- Postfix (a whole instance, for the bounces it writes) --------------------------------------


@dataclass
class PostfixServer:
    """A Postfix instance of its own (config, queue and mail under ``base_dir``): SMTP on
    ``host:port``; mail for the local domain is delivered to the Maildir ``maildir``."""

    host: str
    port: int
    base_dir: Path
    maildir: Path
    log_path: Path

    def stop(self) -> None:
        _postfix(self.base_dir / "etc", "stop", check=False)


def _postfix(config_dir: Path, command: str, *, check: bool = True) -> str:
    """Run ``postfix -c DIR COMMAND``. Under a pseudo-terminal: postfix(1) writes why it
    failed only to a terminal or syslog, and a test machine may have no syslog."""
    run = subprocess.run(["script", "-qec", f"postfix -c {config_dir} {command}", "/dev/null"],
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    output = run.stdout.decode(errors="replace").strip()
    if check and run.returncode != 0:
        raise RuntimeError(f"postfix -c {config_dir} {command} failed: {output}")
    return output


def start_postfix(base_dir: Path, *, local_domain: str, relay_domain: str, relay: str,
                  settings: dict[str, str] | None = None, timeout: float = 30) -> PostfixServer:
    """Run a real Postfix on 127.0.0.1 (as root: its master must be): it accepts mail for
    ``relay_domain`` and relays it to ``relay`` (``host:port``, e.g. an smtp-sink that
    rejects RCPT, so Postfix bounces it the way it would a remote refusal), and delivers mail
    for ``local_domain`` (the bounces) into one Maildir, whatever the local part (VERP too).

    ``settings`` are more main.cf parameters (e.g. short retry times and
    ``delay_warning_time`` for a delay DSN). Postfix's daemons run as the ``postfix`` user and
    deliver as ``nobody``: ``base_dir`` is made traversable for them.
    """
    if not _is_root():
        raise RuntimeError("a Postfix instance needs root (its master process starts as root "
                           "and drops privileges); run the tests as root, as .ci/run does")
    if shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists():
        raise RuntimeError("postfix not found. It comes with Debian's postfix package: "
                           + INSTALL_HINT)
    base_dir = Path(base_dir)
    etc, mail = base_dir / "etc", base_dir / "mail"
    for folder in (etc, base_dir / "spool", base_dir / "data", mail):
        folder.mkdir(parents=True, exist_ok=True)
    _make_traversable(base_dir)
    shutil.chown(base_dir / "data", "postfix")
    shutil.chown(mail, "nobody")
    log_path = base_dir / "postfix.log"
    relay_host, _, relay_port = relay.rpartition(":")
    last_error = ""
    for _attempt in range(PORT_ATTEMPTS):
        port = free_port()
        master = Path("/etc/postfix/master.cf").read_text()
        # Our port instead of 25; no chroot (the chroot would need copies of /etc files).
        master = re.sub(r"(?m)^smtp\s+inet\s.*$", f"127.0.0.1:{port} inet n - n - - smtpd", master)
        (etc / "master.cf").write_text(master)
        (etc / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {base_dir}/spool
data_directory = {base_dir}/data
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.{local_domain}
mydestination =
alias_maps =
alias_database =
relay_domains = {relay_domain}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
transport_maps = inline:{{ {relay_domain}=smtp:[{relay_host}]:{relay_port} }}
virtual_mailbox_domains = {local_domain}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = static:bounces/
virtual_uid_maps = static:{_uid("nobody")}
virtual_gid_maps = static:{_gid("nobody")}
maillog_file_prefixes = {base_dir}
maillog_file = {log_path}
biff = no
""" + "".join(f"{name} = {value}\n" for name, value in (settings or {}).items()))
        subprocess.run(["postconf", "-c", str(etc), "-F", "*/*/chroot = n"], check=True,
                       capture_output=True, timeout=30)
        _postfix(etc, "check")
        server = PostfixServer("127.0.0.1", port, base_dir, mail / "bounces", log_path)
        try:
            _postfix(etc, "start")
        except RuntimeError as exc:  # e.g. the port was taken between free_port and bind
            server.stop()
            last_error = f"{exc}; log: {_tail(log_path)}"
            continue
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            greeting = _smtp_greeting("127.0.0.1", port)
            if greeting and greeting.startswith(b"220"):
                return server
            time.sleep(0.1)
        server.stop()
        last_error = _tail(log_path)
        if "in use" not in last_error:
            break
    raise RuntimeError(f"Postfix did not start on 127.0.0.1 ({PORT_ATTEMPTS} ports tried): "
                       f"{last_error}")


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def _gid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


# --- Dovecot (a real IMAP server, for `bounces ingest --imap`) ---------------------------------


@dataclass
class DovecotServer:
    """A Dovecot IMAP server of its own on ``host:port`` (plain IMAP, no TLS), with one user
    ``user``/``password`` whose mail is the Maildir ``run_dir/mail``; config and log in
    ``base_dir``. ``stop()`` removes ``run_dir``."""

    host: str
    port: int
    user: str
    password: str
    base_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    run_dir: Path = field(repr=False, default=Path())

    def stop(self) -> None:
        _stop_process(self.process, group=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _imap_greeting(port: int) -> bytes | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(1024)
    except OSError:
        return None


def _imap_login(port: int, user: str, password: str) -> bool:
    """Whether a login succeeds: the auth process starts on demand and, on a busy machine,
    the first logins after the greeting can fail "[UNAVAILABLE] Temporary authentication
    failure" until it is ready."""
    import imaplib

    try:
        conn = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    except OSError:
        return False
    try:
        conn.login(user, password)
        return True
    except (imaplib.IMAP4.error, OSError):
        return False
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            conn.logout()


def start_dovecot(base_dir: Path, *, user: str = "bounces", password: str = "s3cret-imap",
                  timeout: float = 30) -> DovecotServer:
    """Run ``dovecot -F -c CONF`` (foreground) with a config written here: IMAP only on
    127.0.0.1, no SSL, plaintext login allowed, passdb/userdb a passwd-file with one user whose
    mail is a Maildir (see `DovecotServer`). As root (Dovecot drops privileges to its own users from
    Debian's package) the mail belongs to ``nobody``. Waits for the ``* OK`` greeting."""
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not Path(binary).exists():
        raise RuntimeError("dovecot not found. It comes with Debian's dovecot-imapd package: "
                           + INSTALL_HINT)
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    # What Dovecot's unprivileged processes open (passwd-file, mail, UNIX sockets) lives in a
    # short directory of its own outside pytest's basetemp: another pytest session resets
    # /tmp/pytest-of-<user> to 0700 (logins then fail "temporarily"), and a UNIX socket path
    # has at most 107 bytes. Config and log (read/written as root) stay in base_dir.
    run_dir = Path(tempfile.mkdtemp(prefix="dovecot-"))
    run_dir.chmod(0o755)
    for folder in ("state", "mail"):
        (run_dir / folder).mkdir()
    owner = "nobody" if _is_root() else None
    uid, gid = (_uid(owner), _gid(owner)) if owner else (os.getuid(), os.getgid())
    if owner:
        shutil.chown(run_dir / "mail", owner)
    (run_dir / "passwd").write_text(
        f"{user}:{{PLAIN}}{password}:{uid}:{gid}::{run_dir / 'mail'}\n")
    (run_dir / "passwd").chmod(0o644)
    log_path = base_dir / "dovecot.log"
    last_error = ""
    for _attempt in range(PORT_ATTEMPTS):
        port = free_port()
        conf = base_dir / "dovecot.conf"
        conf.write_text(f"""protocols = imap
listen = 127.0.0.1
base_dir = {run_dir}
state_dir = {run_dir}/state
log_path = {log_path}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {min(uid, 100)}
mail_location = maildir:{run_dir}/mail
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {run_dir}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {run_dir}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""" + ("" if owner else f"default_login_user = {os.environ.get('USER', 'nobody')}\n"
       f"default_internal_user = {os.environ.get('USER', 'nobody')}\n"))
        with open(base_dir / "dovecot.out", "wb") as out:
            proc = subprocess.Popen([binary, "-F", "-c", str(conf)], cwd=base_dir,
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            greeting = _imap_greeting(port) if _listens_on(proc.pid, port) else None
            if greeting and greeting.startswith(b"* OK") and _imap_login(port, user, password):
                return DovecotServer("127.0.0.1", port, user, password, base_dir, log_path,
                                     proc, run_dir)
            time.sleep(0.1)
        _stop_process(proc, group=False)
        last_error = (f"exit code {proc.returncode}\n{_tail(base_dir / 'dovecot.out')}\n"
                      f"{_tail(log_path)}")
        if "in use" not in last_error:
            break
    shutil.rmtree(run_dir, ignore_errors=True)
    raise RuntimeError(f"Dovecot did not start on 127.0.0.1: {last_error}")


# --- Prism -------------------------------------------------------------------------------------


@dataclass
class PrismServer:
    host: str
    port: int
    url: str  # base URL, e.g. http://127.0.0.1:PORT (stands in for https://api.twilio.com)
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def stop(self) -> None:
        _stop_process(self.process, group=True)


def start_prism(spec: Path, base_dir: Path, *, timeout: float = 90) -> PrismServer:
    """``prism mock`` the OpenAPI description ``spec`` on a free port; waits until it listens."""
    spec = Path(spec).resolve()  # prism runs in base_dir
    if not spec.is_file():
        raise RuntimeError(f"OpenAPI description for Prism not found: {spec}")
    if not os.access(PRISM_BIN, os.X_OK):
        raise RuntimeError(
            f"Prism not found at {PRISM_BIN}. Install it with "
            "`npm install --prefix .cache/prism @stoplight/prism-cli@5`, or " + INSTALL_HINT
        )
    if shutil.which("node") is None:
        raise RuntimeError("Prism needs Node.js (node) on PATH")
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0", "NO_UPDATE_NOTIFIER": "1"}
    last_error = ""
    for _attempt in range(PORT_ATTEMPTS):
        port = free_port()
        log_path = base_dir / f"prism-{port}.log"
        cmd = [str(PRISM_BIN), "mock", "-h", "127.0.0.1", "-p", str(port), str(spec)]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=base_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() kills node and children
            )
        why = ""
        deadline = time.monotonic() + timeout
        listening = False
        while time.monotonic() < deadline and proc.poll() is None:
            if "Prism is listening" in log_path.read_text(errors="replace"):
                listening = True
                break
            time.sleep(0.2)
        if listening:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            except OSError as e:
                listening = False
                why = f"said it was listening but connecting failed: {e}"
        if listening and proc.poll() is None:
            return PrismServer("127.0.0.1", port, f"http://127.0.0.1:{port}", log_path, proc)
        exited = proc.poll() is not None
        _stop_process(proc, group=True)
        log_text = _tail(log_path)
        why = why or ("exited early" if exited else f"not listening after {timeout:.0f}s")
        last_error = f"{' '.join(cmd)}: {why} (exit code {proc.returncode})\n{log_text}"
        if "EADDRINUSE" not in log_text:
            break
    raise RuntimeError(f"Prism did not start: {last_error}")


# --- chat webhooks ---------------------------------------------------------------------------


@dataclass
class HookRequest:
    """One request a ChatServer received, as it arrived."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class ChatServer:
    """A real aiohttp server on 127.0.0.1 (a port the OS picked) in its own thread, standing in
    for the chat vendors' incoming webhooks: it keeps every request and answers each path with
    the scripted (status, body, delay) answers in turn, then with `ok` (200, "ok")."""

    url: str = ""
    requests: list[HookRequest] = field(default_factory=list)
    script: dict[str, list[tuple[int, str, float]]] = field(default_factory=dict)
    _stop: Any = None
    _thread: Any = None

    def answer(self, path: str, *answers: tuple[int, str] | tuple[int, str, float]) -> None:
        """Answer requests to `path` with these (status, body[, delay s]) before `ok`."""
        self.script.setdefault(path, []).extend(
            (a[0], a[1], a[2] if len(a) > 2 else 0.0) for a in answers)  # type: ignore[misc]

    def at(self, path: str) -> list[HookRequest]:
        """The requests received on `path`."""
        return [r for r in self.requests if r.path == path]

    def stop(self) -> None:
        """Stop serving (again: nothing)."""
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()
            self._thread.join(10)


def start_chat_server() -> ChatServer:
    """Start a ChatServer; `stop()` it when done."""
    import asyncio
    import threading

    from aiohttp import web

    server = ChatServer()
    ready = threading.Event()

    async def handle(request: web.Request) -> web.Response:
        server.requests.append(HookRequest(request.path, dict(request.query),
                                           dict(request.headers), await request.read()))
        answers = server.script.get(request.path)
        status, body, delay = answers.pop(0) if answers else (200, "ok", 0.0)
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, text=body)

    def run() -> None:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        server.url = f"http://127.0.0.1:{port}"
        stopped = asyncio.Event()
        server._stop = lambda: loop.call_soon_threadsafe(stopped.set)
        ready.set()
        loop.run_until_complete(stopped.wait())
        loop.run_until_complete(runner.cleanup())
        loop.close()

    server._thread = threading.Thread(target=run, daemon=True)
    server._thread.start()
    if not ready.wait(10):
        raise RuntimeError("the chat webhook server did not start")
    return server


# --- an SMTP server that keeps each envelope (aiosmtpd, in this process) ----------------------


@dataclass(frozen=True)
class Envelope:
    """What one SMTP transaction carried: MAIL FROM, RCPT TO and the message bytes."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


class EnvelopeServer:
    """An aiosmtpd server on 127.0.0.1 (no TLS, no AUTH) keeping every envelope it accepts."""

    def __init__(self) -> None:
        from counting_smtp import _LocalController

        self.envelopes: list[Envelope] = []
        self._controller = _LocalController(self, hostname="127.0.0.1", port=0)
        self.host = "127.0.0.1"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(Envelope(str(envelope.mail_from), tuple(envelope.rcpt_tos),
                                       bytes(envelope.original_content or envelope.content)))
        return "250 2.0.0 Ok: queued"

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def stop(self) -> None:
        self._controller.stop()


def start_envelope_smtp() -> EnvelopeServer:
    """An `EnvelopeServer` listening on a port the OS picked."""
    server = EnvelopeServer()
    server._controller.start()
    return server
