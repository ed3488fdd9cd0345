#!/usr/bin/env bash
# Sets up and runs the tests:   scripts/test.sh [pytest args...]
#
#   1. installs the servers the tests start (PostgreSQL, Postfix's smtp-sink, Prism) if missing:
#      scripts/install-test-deps.sh (as root it installs them; otherwise it says what to install
#      and this script exits 2);
#   2. creates .venv with `python3 -m venv` if missing and installs the project into it with
#      `pip install -e '.[dev,postgres]'` (again only when pyproject.toml has changed);
#   3. runs `.venv/bin/python -m pytest "$@"` from the repository root (so test paths in the
#      arguments are relative to it).
#
# Idempotent; a second run goes straight to pytest. PYTHON=python3.12 picks another interpreter
# for a new .venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
t0=$SECONDS
say() { echo "[test.sh] $*" >&2; }

rc=0
bash scripts/install-test-deps.sh || rc=$?
if ((rc != 0)); then
    exit "$rc"
fi

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        say "Python 3.11 or newer is needed; '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing)."
        say "Set PYTHON=/path/to/python3.11 and run again."
        exit 2
    fi
    say "creating .venv with $("$PYTHON" --version 2>&1)"
    rm -rf .venv
    "$PYTHON" -m venv .venv
fi

# Reinstall only when the dependency declaration changed (or the last install failed).
stamp=".venv/.incident-test-install"
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    say "installing the project into .venv: pip install -e '.[dev,postgres]'"
    rm -f "$stamp"
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    .venv/bin/python -m pip install -q -e '.[dev,postgres]'
    echo "$want" >"$stamp"
fi

say "setup took $((SECONDS - t0))s; running pytest"
exec .venv/bin/python -m pytest "$@"
