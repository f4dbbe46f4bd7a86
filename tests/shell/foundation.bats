#!/usr/bin/env bats
# Shell-level tests of the foundation: the `machina` CLI as an operator's shell or cron uses it.

setup() {
    ROOT="$BATS_TEST_TMPDIR/root"
}

@test "machina --help explains itself and exits 0" {
    run machina --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"Exit codes follow sysexits"* ]]
    [[ "$output" == *"config"* ]]
    [[ "$output" == *"init"* ]]
}

@test "machina --version prints the version" {
    run machina --version
    [ "$status" -eq 0 ]
    [[ "$output" == "machina, version "* ]]
}

@test "an unknown subcommand is a usage error (64)" {
    run machina frobnicate
    [ "$status" -eq 64 ]
    [[ "$output" == *"No such command"* ]]
}

@test "a bad value stops with one line naming variable, value and expectation (78)" {
    MACHINA_WAL_CHECKPOINT_MS=abc run --separate-stderr machina config show
    [ "$status" -eq 78 ]
    [ -z "$output" ]
    [ "$stderr" = "machina: MACHINA_WAL_CHECKPOINT_MS='abc': expected an integer in ms from 1 to 604800000" ]
}

@test "an unknown profile is refused (78)" {
    MACHINA_PROFILE=staging run machina config show
    [ "$status" -eq 78 ]
    [[ "$output" == *"MACHINA_PROFILE='staging': expected one of dev, prod"* ]]
}

@test "config check fails with 78 when MACHINA_ROOT is missing" {
    MACHINA_ROOT="$BATS_TEST_TMPDIR/nowhere" run machina config check
    [ "$status" -eq 78 ]
    [[ "$output" == *"directory does not exist"* ]]
    run machina config check
    [ "$status" -eq 78 ]
    [[ "$output" == *"MACHINA_ROOT is not set"* ]]
}

@test "machina init creates a private layout, idempotently" {
    run machina init "$ROOT"
    [ "$status" -eq 0 ]
    [[ "$output" == *"root ready: $ROOT"* ]]
    for d in queue/inbox queue/processing queue/retry queue/done queue/failed queue/dlq queue/out queue/tmp \
             queue/wal logs memory toolpacks goalpacks plugins run state; do
        [ -d "$ROOT/$d" ]
        [ "$(stat -c %a "$ROOT/$d")" = 700 ]
    done
    run machina init "$ROOT"
    [ "$status" -eq 0 ]
    [ "$output" = "root ready: $ROOT" ]
    MACHINA_ROOT="$ROOT" run machina config check
    [ "$status" -eq 0 ]
}

@test "machina init takes MACHINA_ROOT when no argument is given" {
    MACHINA_ROOT="$ROOT" run machina init
    [ "$status" -eq 0 ]
    [ -d "$ROOT/queue/wal" ]
}

@test "config show: the prod profile fills in, the environment wins, sources are named" {
    MACHINA_PROFILE=prod MACHINA_SHELL_TIMEOUT_MS=777 run machina config show
    [ "$status" -eq 0 ]
    [[ "$output" == *"MACHINA_WAL_FSYNC=1  # profile (MACHINA_PROFILE=prod)"* ]]
    [[ "$output" == *"MACHINA_SHELL_TIMEOUT_MS=777  # env"* ]]
    [[ "$output" == *"MACHINA_PROFILE=prod  # env"* ]]
}

@test "config show never prints a secret" {
    MACHINA_API_TOKEN=tok-very-secret TELEGRAM_BOT_TOKEN=123:bot-secret run machina config show
    [ "$status" -eq 0 ]
    [[ "$output" != *"very-secret"* ]]
    [[ "$output" != *"bot-secret"* ]]
    [[ "$output" == *"MACHINA_API_TOKEN=<set>  # env"* ]]
}

@test "config show --json gives one JSON object per variable" {
    run machina config show --json
    [ "$status" -eq 0 ]
    echo "$output" | "$PYTHON" -c '
import json, sys
rows = [json.loads(line) for line in sys.stdin]
names = {r["name"] for r in rows}
assert "MACHINA_WAL_FSYNC" in names and "MACHINA_ROOT" in names, names
assert all(set(r) >= {"name", "value", "source", "origin", "doc"} for r in rows)
'
}

@test "config show reads the env file between defaults and the environment" {
    printf 'MACHINA_API_PORT=9001\nMACHINA_PROFILE=prod\n' > "$BATS_TEST_TMPDIR/machina.env"
    MACHINA_ENV_FILE="$BATS_TEST_TMPDIR/machina.env" run machina config show --section serve
    [ "$status" -eq 0 ]
    [[ "$output" == *"MACHINA_API_PORT=9001  # file ($BATS_TEST_TMPDIR/machina.env:1)"* ]]
}

@test "an unknown MACHINA_ variable is warned about on stderr, not stdout" {
    MACHINA_WAL_FSINC=1 run --separate-stderr machina config show --section queue
    [ "$status" -eq 0 ]
    [[ "$stderr" == *"unknown configuration variable MACHINA_WAL_FSINC"* ]]
    [[ "$output" != *"FSINC"* ]]
}

@test "config template is the shipped machina.env" {
    run machina config template
    [ "$status" -eq 0 ]
    [ "$output" = "$(cat "$CHECKOUT/etc/machina/machina.env")" ]
}

@test "a pipeline reader going away ends quietly with the SIGPIPE status (141)" {
    # `true` exits at once, so machina's first write meets a pipe with no reader (EPIPE), every time.
    run --separate-stderr bash -c 'machina config show | true; exit "${PIPESTATUS[0]}"'
    [ "$status" -eq 141 ]
    [ -z "$stderr" ]
}
