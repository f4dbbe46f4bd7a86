#!/bin/sh
# run_guardrails: every read-only guardrail in one go (cron, machina-guardrails.timer).
#   validate_aid_refs, validate_docs_refs, security_guardrails, reindex --verify
# Arguments (e.g. --root DIR) go to each check.  Exit status: the highest of the checks' statuses
# (0 all clean, 1 findings, 66/73/78 could not check; see machina(7)).
here=$(dirname "$0")
worst=0
for check in validate_aid_refs validate_docs_refs security_guardrails "reindex --verify"; do
    echo "== $check"
    # shellcheck disable=SC2086  # "reindex --verify" is a command and its option
    "$here"/${check%% *}.py ${check#"${check%% *}"} "$@"
    rc=$?
    [ "$rc" -gt "$worst" ] && worst=$rc
done
echo "== run_guardrails: exit $worst"
exit "$worst"
