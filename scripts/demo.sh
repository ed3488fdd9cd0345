#!/usr/bin/env bash
# Sets up and runs a complete demo incident on the embedded defaults: SQLite and the `file`
# channel, no credentials. Notices are written as .eml and .json files under DIR/outbox/.
#   usage: bash scripts/demo.sh [DIR]     (default DIR: ./demo, recreated each run)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
if [ ! -x .venv/bin/incident ]; then
  echo "== Setting up .venv (first run only)"
  python3 -m venv .venv
  # pip's warnings about this machine's package mirrors are noise for a newcomer.
  .venv/bin/pip install --quiet --upgrade pip 2> >(grep -v '^WARNING: Location' >&2)
  .venv/bin/pip install --quiet -e . 2> >(grep -v '^WARNING: Location' >&2)
fi
incident="$repo/.venv/bin/incident"
demo=${1:-demo}
rm -rf "$demo"
"$incident" init "$demo" >/dev/null
cd "$demo"
export INCIDENT_OPERATOR=duty-supervisor COLUMNS=${COLUMNS:-120}

step() { printf '\n\033[1m== %s\033[0m\n$ incident %s\n' "$1" "${*:2}"; "$incident" "${@:2}"; }

step "Check the shipped playbooks (render every notice, both languages)" playbooks validate
step "Core banking fails: declare the incident, notify affected customers" \
  start core-banking-outage --title "核心系统故障 / Core banking unavailable" \
  --severity II --eta 2h --detected-at 10m
id=$("$incident" --json list | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
step "A customer at a branch needs cash now: log the manual case" \
  manual log "$id" --customer C0003 --request "Urgent cash withdrawal at the counter" \
  --amount 5000 --urgent
step "Compliance confirms it received the internal notice" ack "$id" compliance
step "Draft the 60-minute first report to the regulator from the record" \
  regulator "$id" --draft --lang zh-CN
step "Report filed: tick the regulator duty" \
  step "$id" nfra-first-report --done --note "Phoned the NFRA duty officer"
step "Engineers found the cause: progress update to customers" \
  update "$id" --status identified \
  -m "The fault is in the core database; engineers are switching to the standby system." \
  --message-zh "故障位于核心数据库，技术人员正在切换至备用系统。"
step "Recovery takes longer: announce the new ETA with the reason" \
  eta "$id" 3h --reason "Data verification after the switch-over takes longer than planned"
step "Where do we stand?" status "$id"
step "Service restored: the recovery notice closes the loop" \
  resolve "$id" -m "All services are available again. Transfers made during the outage are being processed." \
  --message-zh "各项业务已恢复正常，故障期间提交的转账正在处理。"
step "The manual case is posted in the recovered system" \
  manual reconcile "$id" M001 --note "Posted to the ledger"
step "Close the incident" close "$id"
step "The record: every action, who did it, when" timeline "$id"
step "Check the record has not been altered" verify "$id"
step "Post-mortem report against the four principles" \
  report "$id" --format html --lang en -o "report-$id.html"
echo "  report written to $PWD/report-$id.html"
step "The public status page customers read (static: host it away from the systems that are down)" \
  page build status-site
echo "  open $PWD/status-site/index.html (Statuspage-shaped JSON under status-site/api/v2/)"

printf '\n\033[1m== Where the notices went\033[0m (file channel: %s/outbox/%s)\n' "$PWD" "$id"
for notice in outbox/"$id"/notice-*; do
  printf '  %s: %s emails, %s SMS\n' "$(basename "$notice")" \
    "$(find "$notice" -name '*.eml' | wc -l)" "$(find "$notice" -name '*.json' | wc -l)"
done
first=$(find outbox/"$id"/notice-001/email -name '*.eml' | sort | head -n 1)
echo "  e.g. $first  (open it in any mail client)"
