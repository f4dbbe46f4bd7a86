#!/usr/bin/env bats
# The queue's shell tools as a pipeline or cron job uses them (bin/ is first on PATH).
bats_require_minimum_version 1.5.0

setup() {
    export MACHINA_ROOT="$BATS_TEST_TMPDIR/root"
    export MACHINA_ENV_FILE=/dev/null
    machina init "$MACHINA_ROOT" >/dev/null
}

@test "enqueue from a pipe prints a name that ls and show know" {
    name=$(echo '{"goal_id":"goal.BATS.v1"}' | machina enqueue)
    [[ "$name" =~ ^p5000_rq_[0-9]{13}_[0-9a-f]{10}\.json$ ]]
    [ "$(machina queue ls inbox)" = "$name" ]
    [ "$(machina queue show "$name" --json | jq -r .state)" = "inbox" ]
}

@test "enqueue --json with a request id answers the HTTP API's body, and dedups" {
    first=$(echo '{"goal_id":"goal.BATS.v1"}' | machina enqueue --json --request-id bats-1)
    again=$(echo '{"goal_id":"goal.BATS.v1"}' | machina enqueue --json --request-id bats-1)
    [ "$(echo "$first" | jq -r .ok)" = "true" ]
    [ "$(echo "$again" | jq -r .deduplicated)" = "true" ]
    [ "$(echo "$first" | jq -r .queued)" = "$(echo "$again" | jq -r .queued)" ]
    [ "$(machina queue stats --json | jq .sizes.inbox)" = "1" ]
}

@test "a bad request exits 65 with one line on stderr and queues nothing" {
    run --separate-stderr machina enqueue <<< 'not json'
    [ "$status" -eq 65 ]
    [ "$output" = "" ]
    [[ "$stderr" == "machina: invalid request: not JSON"* ]]
    [ "$(machina queue stats --json | jq .sizes.inbox)" = "0" ]
}

@test "many requests from a file with --lines, then stats" {
    for i in 1 2 3; do echo "{\"goal_id\":\"goal.BATS.v1\",\"inputs\":{\"i\":$i}}"; done > "$BATS_TEST_TMPDIR/jobs.jsonl"
    run machina enqueue --lines "$BATS_TEST_TMPDIR/jobs.jsonl"
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 3 ]
    [ "$(machina queue stats --json | jq .counters.enqueued)" = "3" ]
}

@test "wal verify is clean after a checkpoint, and unknown jobs exit 67" {
    echo '{"goal_id":"goal.BATS.v1"}' | machina enqueue >/dev/null
    run machina queue checkpoint
    [ "$status" -eq 0 ]
    run machina wal verify
    [ "$status" -eq 0 ]
    [ "${lines[-1]}" = "ok" ]
    run machina queue show p5000_rq_1700000000000_0000000000.json
    [ "$status" -eq 67 ]
}
