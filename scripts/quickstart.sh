#!/bin/sh
# quickstart: from this checkout on a fresh Debian machine, set Machina up (make setup), start the suite
# with `machina up`, push a sample goal.ERROR_SCAN.v1 job through it over HTTP, show the result, stop.
#
#   scripts/quickstart.sh            (as root the first time: make setup installs the Debian packages)
#
# MACHINA_ROOT (default ./demo-root) and MACHINA_API_PORT (default 8080) are honoured.  Exit status:
# 0 the job is done, 69 the suite did not come up or the job did not finish in time.
set -eu
checkout=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
cd "$checkout"
make --no-print-directory setup >/dev/null
root=${MACHINA_ROOT:-$checkout/demo-root}
port=${MACHINA_API_PORT:-8080}
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
bin/machina init "$root" >/dev/null
mkdir -p "$root/data"
printf '%s\n' "2026-01-01T10:00:00 INFO service started" "2026-01-01T10:00:05 ERROR disk /dev/sda1 is full" \
    "2026-01-01T10:00:09 WARN retrying write" "2026-01-01T10:00:12 ERROR write failed: no space left" \
    > "$root/data/app.log"

out="$root/logs/quickstart-up.out"
log="$root/logs/quickstart-up.log"
echo "starting the suite on $root (log: $log)"
MACHINA_ROOT=$root MACHINA_API_PORT=$port MACHINA_API_TOKEN=$token bin/machina up --workers 2 >"$out" 2>"$log" &
up=$!
trap 'kill -TERM $up 2>/dev/null; wait $up 2>/dev/null || true' EXIT INT TERM

waited=0
until grep -q "machina is up" "$out" 2>/dev/null; do
    if ! kill -0 "$up" 2>/dev/null || [ "$waited" -ge 240 ]; then
        echo "the suite did not come up; the last lines of $log:" >&2
        tail -n 20 "$log" >&2
        exit 69
    fi
    sleep 0.5
    waited=$((waited + 1))
done
cat "$out"

job='{"goal_id": "goal.ERROR_SCAN.v1", "inputs": {"input_path": "data/app.log", "pattern": "ERROR"},
      "request_id": "quickstart-1"}'
echo
echo "POST /enqueue $job"
reply=$(curl -sS --max-time 30 -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    --data-binary "$job" "http://127.0.0.1:$port/enqueue")
echo "$reply"
queued=$(printf '%s' "$reply" | sed -n 's/.*"queued": *"\([^"]*\)".*/\1/p')
[ -n "$queued" ] || { echo "not queued" >&2; exit 69; }

waited=0
until [ -e "$root/queue/done/$queued" ]; do
    if [ -e "$root/queue/failed/$queued" ] || [ -e "$root/queue/dlq/$queued" ] || [ "$waited" -ge 240 ]; then
        echo "the job did not finish in done/; see $log" >&2
        exit 69
    fi
    sleep 0.5
    waited=$((waited + 1))
done
echo
echo "done: $root/queue/done/$queued"
stem=${queued%.json}
for result in "$root"/queue/out/"$stem".attempt*.result.json; do
    [ -e "$result" ] || { echo "(no result file in $root/queue/out/)"; break; }
    echo "result ($result):"
    .venv/bin/python -m json.tool "$result"
    report=$(.venv/bin/python -c 'import json, sys
outputs = json.load(open(sys.argv[1]))["result"].get("outputs", {})
print(outputs.get("AID.REPORT_SUMMARY.v1", {}).get("output_path", ""))' "$result" 2>/dev/null || true)
    if [ -n "$report" ] && [ -e "$root/$report" ]; then
        echo
        echo "report written by the job ($root/$report):"
        cat "$root/$report"
    fi
done
echo
bin/machina status --root "$root" || true
