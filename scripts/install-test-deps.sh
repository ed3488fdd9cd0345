#!/usr/bin/env bash
# Installs the system tools the test suite starts as real servers:
#   - PostgreSQL server binaries (initdb, pg_ctl, postgres)  -> Debian package postgresql-15
#   - Postfix's smtp-sink                                    -> Debian package postfix
#   - Prism, the OpenAPI mock server for the Twilio API      -> npm, into .cache/prism (no root needed)
#   - headless Chromium, to open the HTML report             -> Debian package chromium
#   - a Chinese font, so zh-CN report screenshots show text  -> Debian package fonts-wqy-microhei
#   - Dovecot, the IMAP server for `bounces ingest --imap`    -> Debian package dovecot-imapd
#
# Idempotent and fast when everything is present (no apt-get update then).
# As root it installs what is missing; otherwise it prints what to install and exits 2.
# Called by scripts/test.sh; can be run on its own.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PRISM_VERSION="5"
PRISM_DIR="$ROOT/.cache/prism"
PRISM_BIN="$PRISM_DIR/node_modules/.bin/prism"

log() { echo "[install-test-deps] $*" >&2; }

have_pg() {
    # PostgreSQL is not needed locally when the tests are pointed at an existing server.
    [[ -n "${INCIDENT_TEST_PG_URL:-}" ]] && return 0
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        return 0
    fi
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]] && return 0
    done
    return 1
}

have_smtp_sink() {
    command -v smtp-sink >/dev/null 2>&1 || [[ -x /usr/sbin/smtp-sink ]]
}

have_chromium() {
    command -v chromium >/dev/null 2>&1
}

have_cjk_font() {
    # Any Chinese font will do (fc-list comes with fontconfig, which may not be installed).
    if command -v fc-list >/dev/null 2>&1; then
        [[ -n "$(fc-list :lang=zh family 2>/dev/null)" ]]
    else
        compgen -G "/usr/share/fonts/*/wqy/*" >/dev/null || compgen -G "/usr/share/fonts/*/noto-cjk/*" >/dev/null
    fi
}

have_dovecot() {
    command -v dovecot >/dev/null 2>&1 || [[ -x /usr/sbin/dovecot ]]
}

have_prism() {
    [[ -x "$PRISM_BIN" ]]
}

have_pg_user() {
    # initdb/postgres refuse to run as root, so as root the tests run them as `postgres`.
    [[ "$(id -u)" != 0 ]] || id -u postgres >/dev/null 2>&1
}

apt_pkgs=()
have_pg || apt_pkgs+=(postgresql-15)
have_smtp_sink || apt_pkgs+=(postfix)
have_chromium || apt_pkgs+=(chromium)
have_cjk_font || apt_pkgs+=(fonts-wqy-microhei)
have_dovecot || apt_pkgs+=(dovecot-imapd)
# Tools the tests call directly: certificates for the TLS tests, fc-list for the font check.
command -v openssl >/dev/null 2>&1 || apt_pkgs+=(openssl)
command -v fc-list >/dev/null 2>&1 || apt_pkgs+=(fontconfig)

if ((${#apt_pkgs[@]} == 0)) && have_prism && have_pg_user; then
    exit 0
fi

is_root=0
[[ "$(id -u)" == 0 ]] && is_root=1

missing_msg=()

# --- Debian packages --------------------------------------------------------------------------
if ((${#apt_pkgs[@]})); then
    if ((is_root)) && command -v apt-get >/dev/null 2>&1; then
        log "installing ${apt_pkgs[*]} with apt-get"
        t0=$SECONDS
        export DEBIAN_FRONTEND=noninteractive
        # Postfix would otherwise ask what kind of mail server this is; we only want smtp-sink.
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        # Keep apt from starting the postfix / postgresql daemons (port 25, port 5432).
        created_policy=0
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            created_policy=1
        fi
        cleanup_policy() { ((created_policy)) && rm -f /usr/sbin/policy-rc.d; return 0; }
        trap cleanup_policy EXIT
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${apt_pkgs[@]}" >/dev/null
        cleanup_policy
        trap - EXIT
        # Belt and braces: if a daemon got started anyway, stop it (we only need the binaries).
        if [[ " ${apt_pkgs[*]} " == *" postfix "* ]] && command -v postfix >/dev/null 2>&1; then
            postfix status >/dev/null 2>&1 && postfix stop >/dev/null 2>&1 || true
        fi
        if [[ " ${apt_pkgs[*]} " == *" dovecot-imapd "* ]] && command -v doveadm >/dev/null 2>&1; then
            doveadm stop >/dev/null 2>&1 || true  # the tests start their own, on their own port
        fi
        if [[ " ${apt_pkgs[*]} " == *" postgresql-15 "* ]] && command -v pg_ctlcluster >/dev/null 2>&1; then
            pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
        fi
        log "apt-get done in $((SECONDS - t0))s"
    else
        if [[ " ${apt_pkgs[*]} " == *" postfix "* ]]; then
            missing_msg+=("  echo 'postfix postfix/main_mailer_type select No configuration' | sudo debconf-set-selections")
            missing_msg+=("    (only postfix's smtp-sink binary is used; the mail daemon need not run)")
        fi
        missing_msg+=("  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${apt_pkgs[*]}")
    fi
fi

# --- the postgres OS user (only needed when the tests run as root) -----------------------------
if ! have_pg_user; then
    log "creating system user postgres"
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

# --- Prism (npm, into the repo's .cache; no root needed) --------------------------------------
if ! have_prism; then
    if command -v npm >/dev/null 2>&1; then
        log "installing @stoplight/prism-cli@$PRISM_VERSION into .cache/prism with npm"
        t0=$SECONDS
        mkdir -p "$PRISM_DIR"
        npm install --prefix "$PRISM_DIR" --no-audit --no-fund --no-update-notifier --loglevel=error \
            "@stoplight/prism-cli@$PRISM_VERSION" >/dev/null
        log "npm install done in $((SECONDS - t0))s"
    else
        missing_msg+=("  Node.js >= 18 with npm, then: npm install --prefix .cache/prism @stoplight/prism-cli@$PRISM_VERSION")
    fi
fi

if ((${#missing_msg[@]})); then
    {
        echo "The tests start real PostgreSQL, smtp-sink and Prism servers; some are not installed."
        echo "Install them with:"
        printf '%s\n' "${missing_msg[@]}"
        echo "then run scripts/test.sh again."
    } >&2
    exit 2
fi

# Verify: fail loudly here rather than with a confusing error in the middle of the tests.
fail=0
have_pg || { log "PostgreSQL server binaries (initdb, pg_ctl) still not found"; fail=1; }
have_smtp_sink || { log "smtp-sink still not found (expected /usr/sbin/smtp-sink)"; fail=1; }
have_chromium || { log "chromium still not found"; fail=1; }
have_cjk_font || { log "no Chinese font found (fonts-wqy-microhei)"; fail=1; }
have_dovecot || { log "dovecot still not found (expected /usr/sbin/dovecot)"; fail=1; }
have_prism || { log "prism still not found at $PRISM_BIN"; fail=1; }
((fail == 0)) || exit 1
