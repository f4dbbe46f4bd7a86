#!/usr/bin/env bats
# Shell-level tests of `machina tool`, `machina lease`, `machina plugin` and `machina-toolhost`, as an operator
# types them.

setup() {
    ROOT="$BATS_TEST_TMPDIR/root"
    machina init "$ROOT" >/dev/null
    export MACHINA_ROOT="$ROOT"
    TOOLHOST_PID=""
}

teardown() {
    if [ -n "$TOOLHOST_PID" ]; then
        kill "$TOOLHOST_PID" 2>/dev/null || true
        wait "$TOOLHOST_PID" 2>/dev/null || true
    fi
}

start_toolhost() {
    machina-toolhost "$@" 2>"$BATS_TEST_TMPDIR/toolhost.log" &
    TOOLHOST_PID=$!
    for _ in $(seq 200); do
        if machina tool run AID.NOOP.v1 >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    cat "$BATS_TEST_TMPDIR/toolhost.log" >&2
    return 1
}

@test "machina-toolhost --help explains itself" {
    run machina-toolhost --help
    [ "$status" -eq 0 ]
    [[ "$output" == *"SO_PEERCRED"* ]]
    [[ "$output" == *"--bwrap PATH"* ]]
    [[ "$output" == *"--socket PATH"* ]]
}

@test "tool ls shows tiers, paths and what the mode answers" {
    start_toolhost
    run machina tool ls
    [ "$status" -eq 0 ]
    [[ "$output" == *"AID.SHELL.EXEC.v1                3 dangerous  shell   ask"* ]]
    [[ "$output" == *"AID.FILE.READ.v1                 0 safe       pool    allow"* ]]
    run machina tool ls --json
    [ "$status" -eq 0 ]
    [ "$(echo "$output" | wc -l)" -eq 36 ]
}

@test "tool run prints the reply and exits by its status" {
    start_toolhost
    mkdir "$ROOT/data" && printf 'ERROR a\nok\nERROR b\n' > "$ROOT/data/app.log"
    run machina tool run AID.ERROR_SCAN.v1 --input '{"input_path": "data/app.log"}'
    [ "$status" -eq 0 ]
    [[ "$output" == *'"matches":2'* ]]
    echo '{"path": "data/app.log"}' > "$BATS_TEST_TMPDIR/in.json"
    run machina tool run AID.FILE.READ.v1 --input "@$BATS_TEST_TMPDIR/in.json"
    [ "$status" -eq 0 ]
    [[ "$output" == *'"content":"ERROR a\nok\nERROR b\n"'* ]]
    run sh -c 'echo "{\"path\": \"data/none\"}" | machina tool run AID.FILE.READ.v1 --input -'
    [ "$status" -eq 1 ]
    [[ "$output" == *'"status":"tool_error"'* ]]
    run machina tool run AID.NOPE.v1
    [ "$status" -eq 67 ]
    run machina tool run AID.NOOP.v1 --input '{bad'
    [ "$status" -eq 65 ]
    [[ "$output" == *"--input: not JSON"* ]]
    run machina tool run AID.FILE.READ.v1 --input '{}'
    [ "$status" -eq 65 ]
    [[ "$output" == *'"status":"invalid_input"'* ]]
}

@test "a dangerous tool needs a lease, and a lease works once" {
    start_toolhost
    run machina tool run AID.SHELL.EXEC.v1 --input '{"cmd": ["echo", "hi"]}'
    [ "$status" -eq 77 ]
    [[ "$output" == *'"status":"approval_required"'* ]]
    token=$(machina lease issue AID.SHELL.EXEC.v1 --tier 3 --ttl 30s)
    [[ "$token" == mlease_* ]]
    run machina tool run AID.SHELL.EXEC.v1 --input '{"cmd": ["echo", "hi"]}' --lease "$token"
    [ "$status" -eq 0 ]
    [[ "$output" == *'"stdout":"hi\n"'* ]]
    run machina tool run AID.SHELL.EXEC.v1 --input '{"cmd": ["echo", "hi"]}' --lease "$token"
    [ "$status" -eq 77 ]
    run machina lease issue AID.SHELL.EXEC.v1 --tier 1
    [ "$status" -eq 64 ]
    [[ "$output" == *"a tier 1 lease would not cover it"* ]]
    run machina lease issue '*' --tier 2 --ttl soon
    [ "$status" -eq 64 ]
    [[ "$output" == *"expected a duration such as 500ms, 30s, 5m or 1h"* ]]
    run machina lease issue '*' --tier 2 --ttl 5m --json
    [ "$status" -eq 0 ]
    [[ "$output" == *'"aid":"*"'* ]]
    run machina lease gc
    [ "$status" -eq 0 ]
    [[ "$output" == "removed 0 expired lease(s)" ]]
}

@test "a lease issued with --inputs approves that one call only" {
    start_toolhost
    token=$(machina lease issue AID.SHELL.EXEC.v1 --tier 3 --inputs '{"cmd": ["echo", "yes"]}')
    [[ "$token" == mlease_* ]]
    run machina tool run AID.SHELL.EXEC.v1 --input '{"cmd": ["echo", "no"]}' --lease "$token"
    [ "$status" -eq 77 ]
    [[ "$output" == *"with other inputs"* ]]
    run machina tool run AID.SHELL.EXEC.v1 --input '{"cmd": ["echo", "yes"]}' --lease "$token"
    [ "$status" -eq 0 ]
    [[ "$output" == *'"stdout":"yes\n"'* ]]
    run machina lease issue AID.SHELL.EXEC.v1 --tier 3 --inputs '{"cmd": ["echo"]}' --json
    [ "$status" -eq 0 ]
    [[ "$output" == *'"inputs_digest":"'* ]]
    run machina lease issue AID.SHELL.EXEC.v1 --tier 3 --inputs '{"cmd": '
    [ "$status" -eq 65 ]
    [[ "$output" == *"--inputs: not JSON"* ]]
    run machina lease issue AID.SHELL.EXEC.v1 --tier 3 --inputs '[1]'
    [ "$status" -eq 65 ]
    run machina lease issue '*' --tier 3 --inputs '{}'
    [ "$status" -eq 64 ]
    [[ "$output" == *"name its AID"* ]]
}

@test "tool and lease commands without a toolhost exit 69" {
    run machina tool run AID.NOOP.v1
    [ "$status" -eq 69 ]
    [[ "$output" == *"service not running"* ]]
    run machina lease gc
    [ "$status" -eq 69 ]
}

@test "plugin pin and verify" {
    cat > "$BATS_TEST_TMPDIR/hello.py" <<'EOF'
MACHINA_PLUGIN = {"aid": "AID.PLUGIN.HELLO.v1", "name": "hello", "tags": ["tag.test"], "capabilities": []}

def run(inputs, host):
    return {"hello": inputs.get("name", "world")}
EOF
    run machina plugin verify
    [ "$status" -eq 0 ]
    [ "$output" = "no plugins" ]
    run machina plugin pin "$BATS_TEST_TMPDIR/hello.py"
    [ "$status" -eq 0 ]
    [[ "$output" == "pinned hello.py sha256="* ]]
    run machina plugin verify
    [ "$status" -eq 0 ]
    [[ "$output" == "ok        hello.py" ]]
    start_toolhost
    run machina tool run AID.PLUGIN.HELLO.v1 --input '{"name": "bats"}'
    [ "$status" -eq 0 ]
    [[ "$output" == *'"hello":"bats"'* ]]
    echo "# tampered" >> "$ROOT/plugins/hello.py"
    run machina plugin verify
    [ "$status" -eq 1 ]
    [[ "$output" == "mismatch  hello.py" ]]
    run machina tool run AID.PLUGIN.HELLO.v1
    [ "$status" -eq 77 ]
    [[ "$output" == *"does not match its pin"* ]]
    run machina plugin pin "$BATS_TEST_TMPDIR/missing.py"
    [ "$status" -eq 66 ]
}

@test "machina-toolhost refuses to start without bubblewrap when it is required" {
    MACHINA_BWRAP_REQUIRED=1 run machina-toolhost --bwrap /nonexistent/bwrap
    [ "$status" -eq 69 ]
    [[ "$output" == *"MACHINA_BWRAP_REQUIRED=1 forbids running tools without it"* ]]
}
