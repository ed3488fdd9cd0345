#!/usr/bin/env bash
# Runs every benchmark of bench/ side by side with its baselines, in one run, on this machine,
# and regenerates bench/RESULTS.md (each figure, its baseline, the ratio, the machine, the date).
#
#   usage: bash bench/run_all.sh [--quick]
#     --quick   smaller sizes (a few minutes; for checking the scripts, not for publishing)
#
# Needs the README's set-up (the .venv of scripts/demo.sh or scripts/test.sh); installs
# Postfix (smtp-sink, smtp-source) itself when it is missing and this runs as root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1

log() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

if [[ ! -x .venv/bin/python ]]; then
    log "Setting up .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip
fi
.venv/bin/pip install --quiet -e ".[dev,postgres]" 2> >(grep -v '^WARNING: Location' >&2)
PY="$ROOT/.venv/bin/python"
# An installed package is byte-compiled by pip; this editable one is not, and where
# PYTHONDONTWRITEBYTECODE is set (as on our build machines) every `incident` process would compile
# its ~100 modules from source again (0.2-0.3 s a start). Compile them once, as pip would.
"$PY" -m compileall -q -j 0 incident >/dev/null
export PATH="$ROOT/.venv/bin:$PATH"

if ! command -v smtp-sink >/dev/null 2>&1 && [[ ! -x /usr/sbin/smtp-sink ]]; then
    if [[ $(id -u) -eq 0 ]]; then
        log "Installing postfix (smtp-sink, smtp-source)"
        export DEBIAN_FRONTEND=noninteractive
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        apt-get update -qq && apt-get install -y -qq postfix >/dev/null
    else
        echo "bench/run_all.sh: postfix (smtp-sink) is missing; install it: apt-get install postfix" >&2
        exit 2
    fi
fi
export PATH="$PATH:/usr/sbin"

OUT="$ROOT/bench/results"
rm -rf "$OUT"
mkdir -p "$OUT"

run() {  # run NAME CMD... : human output to results/NAME.txt (and the terminal)
    local name=$1; shift
    log "$name: $*"
    local rc=0
    "$@" 2>&1 | tee "$OUT/$name.txt" || rc=$?
    echo "$rc" > "$OUT/$name.rc"
}

if (( QUICK )); then
    run fanout_email "$PY" bench/fanout_email.py --n 5000 --slow-n 200 --json-out "$OUT/fanout_email.json"
    run fanout_big "$PY" bench/fanout_email.py --big --n 100000 --baseline-seconds 10 --json-out "$OUT/fanout_big.json"
    run sms_rate "$PY" bench/sms_rate.py --seconds 10 --json-out "$OUT/sms_rate.json"
    run first_notice "$PY" bench/first_notice.py --customers 20000 --runs 2 --json-out "$OUT/first_notice.json"
    run report "$PY" bench/report.py --rows 100000 --events 2000 --json-out "$OUT/report.json"
    run receipts "$PY" bench/receipts.py --callbacks 3000 --json-out "$OUT/receipts.json"
    run bounces "$PY" bench/bounces.py --messages 10000 --runs 1 --json-out "$OUT/bounces.json"
    run sql_audience "$PY" bench/sql_audience.py --customers 50000 --json-out "$OUT/sql_audience.json"
    run page "$PY" bench/page.py --incidents 200 --json-out "$OUT/page.json"
else
    run fanout_email "$PY" bench/fanout_email.py --json-out "$OUT/fanout_email.json"
    run fanout_big "$PY" bench/fanout_email.py --big --json-out "$OUT/fanout_big.json"
    run sms_rate "$PY" bench/sms_rate.py --json-out "$OUT/sms_rate.json"
    run first_notice "$PY" bench/first_notice.py --json-out "$OUT/first_notice.json"
    run first_notice_sms "$PY" bench/first_notice.py --phones --json-out "$OUT/first_notice_sms.json"
    run report "$PY" bench/report.py --json-out "$OUT/report.json"
    run receipts "$PY" bench/receipts.py --pg --json-out "$OUT/receipts.json"
    run bounces "$PY" bench/bounces.py --json-out "$OUT/bounces.json"
    run sql_audience "$PY" bench/sql_audience.py --json-out "$OUT/sql_audience.json"
    run page "$PY" bench/page.py --json-out "$OUT/page.json"
fi
if [[ -f bench/start_memory.py ]]; then
    if (( QUICK )); then
        run start_memory "$PY" bench/start_memory.py --customers 20000 --json-out "$OUT/start_memory.json"
    else
        run start_memory "$PY" bench/start_memory.py --json-out "$OUT/start_memory.json"
    fi
fi

log "Writing bench/RESULTS.md"
"$PY" bench/results_md.py "$OUT" --quick "$QUICK" > bench/RESULTS.md
echo "bench/RESULTS.md written ($(grep -c '| PASS\|| MISS' bench/RESULTS.md) targets)" >&2
