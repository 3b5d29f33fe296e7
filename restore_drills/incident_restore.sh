#!/usr/bin/env bash
# The incident runbook, executable: restore an Airflow deployment's metadata database from a backup.
#
#   incident_restore.sh --target-dsn DSN [--backup ID|latest] [--yes] [--migrate] [--clean] [--terminate-sessions]
#                       [--k8s-namespace NS --k8s-scheduler DEPLOYMENT]
#                       [--k8s-agent-target TARGET [--k8s-agent-container NAME]] [--config FILE]
#                       [--smoke-url URL] [--canary] [--no-smoke]
#
# 1. show what will be restored and confirm     5. what restore verified
# 2. scale the scheduler to 0 (Kubernetes)       6. scale the scheduler back up
# 3. afbackup restore (DAGs left paused)         7. afbackup smoke (before anything is unpaused), stuck work
# 4. Fernet re-encryption, the DAGs now paused,  8. next steps
#    the work in flight, what the database does not hold
#
# afbackup restore does the heavy lifting and the safety checks (verification before the target is touched,
# the Airflow schema check, the Fernet re-encryption); this script sequences it and tells the operator what
# happened. Environment: AFBACKUP (the afbackup command, default: afbackup), AFBACKUP_CONFIG, KUBECTL
# (default: kubectl), K8S_WAIT_TIMEOUT (seconds, default 300), PYTHON (reads JSON, default: python3),
# SMOKE_TIMEOUT (seconds to wait for Airflow to become healthy for the smoke test, default 180).
#
# Exit code: 0 restored; 2 usage error, or not confirmed; otherwise afbackup's exit code of the step that
# failed (4 also when the scheduler could not be scaled down: nothing was restored); 1 when the restore
# succeeded but the scheduler could not be scaled back up (the message says what to run); 3 when
# --target-dsn holds a password; 10 when the restore succeeded but the smoke test failed (the report says
# which check: do not unpause DAGs yet).
#
# The restore's Airflow steps (version check, Fernet re-encryption) run in afbackup's exec target
# ([airflow.kubernetes] target). When that is the scheduler this script scales to 0, it has no Ready pod
# during the restore: the script refuses up front (exit 2, nothing changed) unless --k8s-agent-target names
# another pod with the same Airflow image and Fernet key (e.g. deployment/airflow-webserver or
# deployment/airflow-api-server), which it passes to afbackup as AFBACKUP_AIRFLOW_KUBERNETES_TARGET.
set -euo pipefail

PROG=${0##*/}
read -r -a AFB <<<"${AFBACKUP:-afbackup}"
read -r -a KUBE <<<"${KUBECTL:-kubectl}"
PYTHON=${PYTHON:-python3}
WAIT_TIMEOUT=${K8S_WAIT_TIMEOUT:-300}
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-180}

usage() {
    cat <<EOF
usage: $PROG --target-dsn DSN [--backup ID|latest] [--yes] [--migrate] [--clean] [--terminate-sessions]
       $PROG ... --k8s-namespace NS --k8s-scheduler DEPLOYMENT

  --target-dsn DSN         the database to restore into (created when missing; no password in it)
  --backup ID|latest       the backup to restore (default: latest; resolved to an id before anything happens)
  --yes                    do not ask for confirmation (required when there is no terminal)
  --migrate                run \`airflow db migrate\` after the restore (when the backup's schema is older)
  --clean                  allow a non-empty target: it is REPLACED by an atomic swap (the old one is kept as
                           <target>__afbackup_previous_<stamp> until \`afbackup restore-cleanup\` drops it)
  --terminate-sessions     end the other sessions on the target (Airflow components still running) instead
                           of refusing
  --k8s-namespace NS       with --k8s-scheduler: the namespace of the scheduler Deployment
  --k8s-scheduler NAME     scale this Deployment to 0 during the restore, and back afterwards (on any exit)
  --k8s-agent-target T     where afbackup runs its Airflow agent during the restore (deployment/NAME, pod/NAME
                           or selector:K=V): required when [airflow.kubernetes] target is the scheduler above
  --k8s-agent-container C  the container of --k8s-agent-target (default: [airflow.kubernetes] container)
  --config FILE            afbackup's config file (default: \$AFBACKUP_CONFIG, else /etc/afbackup/config.toml)
  --smoke-url URL          the restored Airflow's API for the smoke test (default: the config's [airflow.api] url)
  --canary                 the smoke test also runs the canary DAG (afbackup canary install puts it in place)
  --no-smoke               skip the smoke test (step 7)
EOF
}

die_usage() { printf '%s: %s\n' "$PROG" "$*" >&2; usage >&2; exit 2; }
say() { printf '%s\n' "$*"; }
warn() { printf '%s: %s\n' "$PROG" "$*" >&2; }
banner() { printf '\n==== [%s/8] %s ====\n' "$1" "$2"; }
loud() {  # loud LINE...: a message the operator must not miss (on stderr, with afbackup's errors)
    local bar='!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
    { printf '\n%s\n' "$bar"; printf '!!! %s\n' "$@"; printf '%s\n\n' "$bar"; } >&2
}

# --------------------------------------------------------------------------------------------- arguments
TARGET_DSN="" BACKUP="latest" YES=0 MIGRATE=0 CLEAN=0 TERMINATE=0 K8S_NS="" K8S_DEPLOY="" AGENT_TARGET="" AGENT_CONTAINER=""
SMOKE=1 SMOKE_URL="" CANARY=0
need() { [[ $# -ge 2 && -n $2 ]] || die_usage "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --target-dsn) need "$@"; TARGET_DSN=$2; shift 2 ;;
        --target-dsn=*) TARGET_DSN=${1#*=}; shift ;;
        --backup) need "$@"; BACKUP=$2; shift 2 ;;
        --backup=*) BACKUP=${1#*=}; shift ;;
        --k8s-namespace) need "$@"; K8S_NS=$2; shift 2 ;;
        --k8s-namespace=*) K8S_NS=${1#*=}; shift ;;
        --k8s-scheduler) need "$@"; K8S_DEPLOY=$2; shift 2 ;;
        --k8s-scheduler=*) K8S_DEPLOY=${1#*=}; shift ;;
        --k8s-agent-target) need "$@"; AGENT_TARGET=$2; shift 2 ;;
        --k8s-agent-target=*) AGENT_TARGET=${1#*=}; shift ;;
        --k8s-agent-container) need "$@"; AGENT_CONTAINER=$2; shift 2 ;;
        --k8s-agent-container=*) AGENT_CONTAINER=${1#*=}; shift ;;
        --config) need "$@"; export AFBACKUP_CONFIG=$2; shift 2 ;;
        --config=*) export AFBACKUP_CONFIG=${1#*=}; shift ;;
        --smoke-url) need "$@"; SMOKE_URL=$2; shift 2 ;;
        --smoke-url=*) SMOKE_URL=${1#*=}; shift ;;
        --canary) CANARY=1; shift ;;
        --no-smoke) SMOKE=0; shift ;;
        --yes) YES=1; shift ;;
        --migrate) MIGRATE=1; shift ;;
        --clean) CLEAN=1; shift ;;
        --terminate-sessions) TERMINATE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die_usage "unknown argument: $1" ;;
    esac
done
[[ -n $TARGET_DSN ]] || die_usage "--target-dsn is required"
[[ -n $BACKUP ]] || die_usage "--backup must not be empty"
K8S_DEPLOY=${K8S_DEPLOY#deployment/}
K8S_DEPLOY=${K8S_DEPLOY#deployments/}
if [[ -n $K8S_DEPLOY && -z $K8S_NS ]] || [[ -z $K8S_DEPLOY && -n $K8S_NS ]]; then
    die_usage "--k8s-namespace and --k8s-scheduler go together"
fi
[[ -z $AGENT_CONTAINER || -n $AGENT_TARGET ]] || die_usage "--k8s-agent-container needs --k8s-agent-target"
# A password in the DSN would be printed below and reach pg_restore's argv: refused as afbackup refuses it.
if [[ $TARGET_DSN =~ ://[^/?#@]*:[^/?#@]*@ || $TARGET_DSN =~ (^|[[:space:]?\&])password[[:space:]]*= ]]; then
    printf '%s: ERROR: --target-dsn contains a password: pass the DSN without it and give the password in\n' \
        "$PROG" >&2
    printf '%s: restore.password_file, PGPASSWORD or PGPASSFILE (README.md, "Database password"). Nothing was changed.\n' \
        "$PROG" >&2
    exit 3
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/afbackup-incident.XXXXXX")
SCALED_DOWN=0       # 1 while the scheduler is at 0 replicas because of us
ORIGINAL_REPLICAS=""
SCALE_BACK_FAILED=0

kube() { "${KUBE[@]}" -n "$K8S_NS" "$@"; }

scale_back_up() {  # returns non-zero (after saying so, loudly) when the scheduler could not be scaled back
    SCALED_DOWN=0
    say "scaling deployment/$K8S_DEPLOY in $K8S_NS back to $ORIGINAL_REPLICAS replica(s)"
    if ! kube scale "deployment/$K8S_DEPLOY" --replicas="$ORIGINAL_REPLICAS"; then
        SCALE_BACK_FAILED=1
        loud "THE AIRFLOW SCHEDULER IS STILL SCALED DOWN TO 0: scaling it back up FAILED." \
            "Scale it back up yourself, now:" \
            "    kubectl -n $K8S_NS scale deployment/$K8S_DEPLOY --replicas=$ORIGINAL_REPLICAS"
        return 1
    fi
    if ! kube rollout status "deployment/$K8S_DEPLOY" --timeout="${WAIT_TIMEOUT}s"; then
        warn "WARNING: deployment/$K8S_DEPLOY is not ready after ${WAIT_TIMEOUT}s: check its pods and logs"
    fi
}

# shellcheck disable=SC2329  # the EXIT trap
on_exit() {
    local rc=$?
    set +e
    if ((SCALED_DOWN)); then
        loud "$PROG is exiting (code $rc) with the scheduler scaled down: scaling it back up now."
        scale_back_up || { ((rc == 0)) && rc=1; }
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# JSON helpers (the reports are afbackup's --json output, read with Python's json module)
manifest_summary() {  # stdin: afbackup show --json; stdout: id, finished, Airflow, schema, PostgreSQL, not captured
    "$PYTHON" -c '
import json, sys
m = json.load(sys.stdin)
a, p = m.get("airflow") or {}, m.get("postgres") or {}
print(m["backup_id"])
print(m.get("finished_at") or "?")
print(a.get("cli_version") or ("%s.x" % a["major"] if a.get("major") else "unknown"))
print(a.get("schema_revision") or "?")
print(p.get("server_version") or "?")
nc = m.get("not_captured") or (m.get("exports") or {}).get("not_captured") or {}
print("; ".join("%s: %s" % (k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in nc.items() if v)
      if isinstance(nc, dict) else ", ".join(map(str, nc)))
'
}

restore_summary() {  # stdin: afbackup restore --json; stdout: KEY<TAB>VALUE lines
    "$PYTHON" -c '
import json, sys
r = json.load(sys.stdin)
print("backup_id\t%s" % r.get("backup_id", ""))
print("target\t%s" % r.get("target", ""))
print("seconds\t%.1f" % float(r.get("seconds") or 0))
fernet = r.get("fernet")
if fernet is None:
    print("fernet\tunchecked")
else:
    print("fernet\t%s" % ("reencrypted" if fernet.get("reencrypted") else "same"))
    before = fernet.get("undecryptable_before") or {}
    print("reencrypted_counts\t%d connection(s), %d variable(s)"
          % (len(before.get("connections") or []), len(before.get("variables") or [])))
for step in r.get("steps") or []:
    print("step\t%s" % " ".join(str(step).split()))
for dag in r.get("paused_dags") or []:
    print("dag\t%s" % dag)
f = r.get("in_flight")
if f:
    print("inflight\t%d task instance(s), %d DAG run(s), %d trigger(s) in flight at backup time"
          % (f["task_instances"], f["dag_runs"], f["triggers"]))
for warning in (r.get("environment") or {}).get("warnings") or []:
    print("warning\t%s" % " ".join(str(warning).split()))
print("previous\t%s" % (r.get("previous_database") or ""))
for s in r.get("terminated_sessions") or []:
    print("terminated\tpid %s %s from %s" % (s.get("pid"), s.get("application") or "?", s.get("client") or "local"))
'
}

exec_target() {  # stdout: executor<TAB>namespace<TAB>target<TAB>container, from afbackup's effective config
    { "${AFB[@]}" config show --json 2>/dev/null || true; } | "$PYTHON" -c '
import json, sys
try:
    values = {item["key"]: item["value"] for item in json.load(sys.stdin).get("values", [])}
except ValueError:
    sys.exit(0)
keys = ("airflow.executor", "airflow.kubernetes.namespace", "airflow.kubernetes.target", "airflow.kubernetes.container")
print("\t".join(str(values.get(key) or "") for key in keys))
' 2>/dev/null || true
}

# The restore runs its Airflow agent in afbackup's exec target: it must not be the scheduler scaled down below.
if [[ -n $K8S_DEPLOY ]]; then
    IFS=$'\t' read -r EXECUTOR EXEC_NS EXEC_TARGET _ < <(exec_target) || true
    if [[ ${EXECUTOR:-} == kubernetes && ${EXEC_NS:-} == "$K8S_NS" && ${EXEC_TARGET:-} == "deployment/$K8S_DEPLOY" ]] \
        && [[ -z $AGENT_TARGET ]]; then
        warn "ERROR: afbackup runs its Airflow agent in $EXEC_TARGET ([airflow.kubernetes] target), the scheduler" \
            "this script scales to 0: the restore would find no Ready pod there. Pass --k8s-agent-target with another" \
            "pod of the same Airflow image and Fernet key (e.g. deployment/airflow-webserver, and" \
            "--k8s-agent-container NAME). Nothing was changed."
        exit 2
    fi
fi
if [[ -n $AGENT_TARGET ]]; then
    export AFBACKUP_AIRFLOW_KUBERNETES_TARGET=$AGENT_TARGET
    [[ -n $AGENT_CONTAINER ]] && export AFBACKUP_AIRFLOW_KUBERNETES_CONTAINER=$AGENT_CONTAINER
fi

smoke_summary() {  # stdin: afbackup smoke --json; stdout: PASS|FAIL|SKIP <check>: <detail>, then the stuck work
    "$PYTHON" -c '
import json, sys
try:
    r = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
for c in r.get("checks") or []:
    print("%s %s: %s" % ({True: "PASS", False: "FAIL", None: "SKIP"}[c.get("ok")], c["name"],
                         " ".join(str(c.get("detail", "")).split())))
stuck = r.get("stuck") or []
if stuck:
    print("stuck work (%d): clear or fail these before unpausing anything:" % len(stuck))
for s in stuck:
    print("  - %s: dag %s, task %s, run %s, pool %s, since %s"
          % (s["state"], s["dag_id"], s["task_id"], s["run_id"], s["pool"], s["since"]))
'
}

# --------------------------------------------------------------------------------------------- 1. what
banner 1 "What will be restored"
show_json=$("${AFB[@]}" show "$BACKUP" --json) || {
    rc=$?
    warn "ERROR: cannot read backup '$BACKUP' (afbackup show exited $rc): nothing was changed"
    exit "$rc"
}
mapfile -t M < <(printf '%s' "$show_json" | manifest_summary)
[[ ${#M[@]} -ge 5 && -n ${M[0]} ]] || { warn "ERROR: cannot read the manifest of '$BACKUP'"; exit 8; }
BACKUP_ID=${M[0]}
say "backup:        $BACKUP_ID$([[ $BACKUP != "$BACKUP_ID" ]] && printf ' (%s)' "$BACKUP")"
say "finished at:   ${M[1]}"
say "Airflow:       ${M[2]} (schema revision ${M[3]})"
say "PostgreSQL:    ${M[4]}"
[[ -n ${M[5]:-} ]] && say "NOT in the backup (environment/secrets backend): ${M[5]}"
say "target:        $TARGET_DSN"
say "restore with:  --pause-dags$( ((MIGRATE)) && printf ' --migrate')$( ((CLEAN)) && printf ' --clean')$( ((TERMINATE)) && printf ' --terminate-sessions')"
if [[ -n $K8S_DEPLOY ]]; then
    say "scheduler:     deployment/$K8S_DEPLOY in namespace $K8S_NS is scaled to 0 during the restore"
else
    say "scheduler:     not on Kubernetes (no --k8s-scheduler): stop the scheduler yourself if it uses the target"
fi
[[ -n $AGENT_TARGET ]] && say "Airflow agent: $AGENT_TARGET${AGENT_CONTAINER:+ (container $AGENT_CONTAINER)} (--k8s-agent-target)"
((CLEAN)) && say "WARNING:       --clean REPLACES the target database (loaded and checked in a new database, then" \
    "swapped in by rename; the old one is kept under a new name, and stays untouched if anything fails)"
((TERMINATE)) && say "WARNING:       --terminate-sessions ENDS every other session on the target (running Airflow components)"

if ((YES)); then
    say "confirmed by --yes"
elif [[ ! -t 0 ]]; then
    warn "ERROR: refusing to restore without confirmation: no terminal to ask on. Rerun with --yes once you" \
        "have checked the above. Nothing was changed."
    exit 2
else
    read -r -p "Restore backup $BACKUP_ID into the target above? Type 'restore' to proceed: " answer || answer=""
    if [[ $answer != restore ]]; then
        warn "not confirmed: nothing was changed"
        exit 2
    fi
fi

# --------------------------------------------------------------------------------------------- 2. scheduler down
banner 2 "Stop the scheduler"
if [[ -z $K8S_DEPLOY ]]; then
    say "skipped: not on Kubernetes"
else
    if ! ORIGINAL_REPLICAS=$(kube get deployment "$K8S_DEPLOY" -o 'jsonpath={.spec.replicas}'); then
        warn "ERROR: cannot read deployment/$K8S_DEPLOY in $K8S_NS: nothing was changed"
        exit 4
    fi
    ORIGINAL_REPLICAS=${ORIGINAL_REPLICAS:-1}  # .spec.replicas defaults to 1 when unset
    [[ $ORIGINAL_REPLICAS =~ ^[0-9]+$ ]] || { warn "ERROR: unexpected replica count '$ORIGINAL_REPLICAS'"; exit 4; }
    if ((ORIGINAL_REPLICAS == 0)); then
        say "deployment/$K8S_DEPLOY is already at 0 replicas: it stays there"
    else
        say "deployment/$K8S_DEPLOY has $ORIGINAL_REPLICAS replica(s): scaling to 0"
        SCALED_DOWN=1  # from here on, any exit scales it back up
        kube scale "deployment/$K8S_DEPLOY" --replicas=0 || { warn "ERROR: scaling down failed"; exit 4; }
        # shellcheck disable=SC2016  # a Go template, not shell
        selector=$(kube get deployment "$K8S_DEPLOY" \
            -o 'go-template={{range $k, $v := .spec.selector.matchLabels}}{{$k}}={{$v}},{{end}}') || selector=""
        selector=${selector%,}
        if [[ -z $selector ]]; then
            warn "ERROR: cannot read the deployment's pod selector to wait for its pods to stop"
            exit 4
        fi
        deadline=$((SECONDS + WAIT_TIMEOUT))
        while pods=$(kube get pods -l "$selector" -o name) && [[ -n $pods ]]; do
            if ((SECONDS >= deadline)); then
                warn "ERROR: the scheduler's pods are still there after ${WAIT_TIMEOUT}s: nothing was restored"
                exit 4
            fi
            say "waiting for $(wc -l <<<"$pods") scheduler pod(s) to stop..."
            sleep 5
        done
        say "the scheduler is stopped (no pod matches $selector)"
    fi
fi

# --------------------------------------------------------------------------------------------- 3. restore
banner 3 "Restore"
args=(restore "$BACKUP_ID" --target-dsn "$TARGET_DSN" --pause-dags --json --yes)
((MIGRATE)) && args+=(--migrate)
((CLEAN)) && args+=(--clean)
((TERMINATE)) && args+=(--terminate-sessions)
say "running: afbackup ${args[*]}"
rc=0
"${AFB[@]}" "${args[@]}" >"$WORK/restore.json" 2> >(tee "$WORK/restore.err" >&2) || rc=$?
wait "$!" 2>/dev/null || true  # the tee above has flushed
if ((rc != 0)); then
    say ""
    say "afbackup restore FAILED with exit code $rc (the ERROR line above says why; README.md, \"Exit codes\")."
    if ((rc == 4)) && ((!MIGRATE)) && grep -q -- '--migrate' "$WORK/restore.err"; then
        loud "The backup's Airflow schema is OLDER than the target Airflow's: restore refused and changed nothing." \
            "If upgrading the schema is what you want, rerun this script with --migrate" \
            "(it runs \`airflow db migrate\` after the restore). It was not added for you."
    elif ((rc == 4)) && ((!CLEAN)) && grep -q 'not empty' "$WORK/restore.err"; then
        say "The target database is not empty: restore into a new database, or rerun with --clean (which drops"
        say "the target's Airflow schema first). Nothing was changed."
    elif ((rc == 4)) && grep -q 'other session' "$WORK/restore.err"; then
        say "Airflow components (or other clients, named above) are still connected to the target. Stop them"
        say "(scheduler, api-server/webserver, triggerer, dag-processor, workers), or rerun with --terminate-sessions."
        say "Nothing was changed."
    elif ((rc == 4)) && grep -q -e 'CREATEDB' -e 'does not own' "$WORK/restore.err"; then
        say "The restore role lacks a privilege the atomic restore needs (named above; README.md, Restore). Nothing"
        say "was changed."
    elif ((rc != 4)) && grep -q -e 'is untouched' -e 'was not created' "$WORK/restore.err"; then
        say "The live database was NOT changed (the ERROR line says so): Airflow can keep running on it."
    elif ((rc == 4)) && grep -q 'newer Airflow' "$WORK/restore.err"; then
        say "The backup is from a newer Airflow than the target's: install Airflow ${M[2]} on the target first."
    fi
    exit "$rc"
fi
mapfile -t R < <(restore_summary <"$WORK/restore.json")
declare -A INFO=()
STEPS=() DAGS=() WARNINGS=() TERMINATED=()
for line in "${R[@]}"; do
    key=${line%%$'\t'*} value=${line#*$'\t'}
    case $key in
        step) STEPS+=("$value") ;;
        dag) DAGS+=("$value") ;;
        warning) WARNINGS+=("$value") ;;
        terminated) TERMINATED+=("$value") ;;
        *) INFO[$key]=$value ;;
    esac
done
say "restored backup ${INFO[backup_id]:-$BACKUP_ID} into ${INFO[target]:-$TARGET_DSN} in ${INFO[seconds]:-?}s"
if ((${#TERMINATED[@]})); then
    say "terminated sessions (--terminate-sessions):"
    printf '  - %s\n' "${TERMINATED[@]}"
fi
[[ -n ${INFO[previous]:-} ]] && say "the replaced database is kept as ${INFO[previous]}"

# --------------------------------------------------------------------------------------------- 4. Fernet, DAGs
banner 4 "Fernet keys and DAGs"
case ${INFO[fernet]:-unchecked} in
    reencrypted) say "Fernet: the target's key differs from the backup's: afbackup re-encrypted" \
        "${INFO[reencrypted_counts]:-the connections and variables} under the target's key (values unchanged)." ;;
    same) say "Fernet: every restored connection and variable decrypts with the target's key: no re-encryption needed." ;;
    *) say "Fernet: NOT checked (no Airflow executor configured): the restored connections and variables are" \
        "encrypted with the SOURCE deployment's Fernet key; start Airflow with that key (see README.md, Restore)." ;;
esac
if ((${#DAGS[@]})); then
    say "DAGs that were active in the backup and are now PAUSED (${#DAGS[@]}):"
    printf '  - %s\n' "${DAGS[@]}"
else
    say "No DAG was active in the backup: every DAG is paused, as it was."
fi
say "Work in flight: ${INFO[inflight]:-not recorded in this backup}; reconciled by restore (--in-flight reset:"
say "  cleared, they run again once their DAG is unpaused; docs/restore.md)."
check_item() {  # check_item NAME PATTERN WHAT-TO-BRING: the restore's warnings about it, else ok
    local w found=0
    for w in "${WARNINGS[@]}"; do [[ ${w,,} == *$2* ]] && { say "  [WARNING] $1: $w"; found=1; }; done
    ((found)) || say "  [ok] $1: $3"
}
say "What the database does not hold (bring it; checked against the target by restore):"
say "  [${INFO[fernet]:-unchecked}] Fernet key: the target decrypts every restored connection, variable and trigger"
check_item "JWT secret" "jwt_secret" "the same [api_auth] jwt_secret on every component (Airflow 3)"
check_item "auth" "auth manager" "users/passwords: SimpleAuthManager's password file (not in the DB) or FAB's ab_* tables"
check_item "FAB schema" "fab" "no FAB schema mismatch"
check_item "DAG bundles" "bundle" "every bundle the database names is configured"
check_item "providers" "provider" "every restored connection type has a provider"

# --------------------------------------------------------------------------------------------- 5. verified
banner 5 "What restore did and verified"
# restore verified the archive before touching the target, and afterwards compared every table's row count and
# sequence with the manifest and (with an executor) every connection and variable with the backup; nothing
# destructive is re-run here.
if ((${#STEPS[@]})); then
    printf '  - %s\n' "${STEPS[@]}"
fi

# --------------------------------------------------------------------------------------------- 6. scheduler up
banner 6 "Start the scheduler"
if ((SCALED_DOWN)); then
    scale_back_up || true
elif [[ -n $K8S_DEPLOY ]]; then
    say "deployment/$K8S_DEPLOY was at 0 replicas before: left at 0"
else
    say "skipped: not on Kubernetes"
fi

# --------------------------------------------------------------------------------------------- 7. smoke test
banner 7 "Smoke test (before anything is unpaused)"
SMOKE_RC=0
if ((!SMOKE)); then
    say "skipped: --no-smoke"
else
    smoke_args=(smoke "$BACKUP_ID" --dsn "$TARGET_DSN" --json)
    [[ -n $SMOKE_URL ]] && smoke_args+=(--url "$SMOKE_URL")
    ((CANARY)) && smoke_args+=(--canary)
    say "running: afbackup ${smoke_args[*]}"
    deadline=$((SECONDS + SMOKE_TIMEOUT))
    while :; do
        SMOKE_RC=0
        "${AFB[@]}" "${smoke_args[@]}" >"$WORK/smoke.json" 2>"$WORK/smoke.err" || SMOKE_RC=$?
        # only an Airflow that is not healthy yet is worth waiting for; anything else is the answer
        if ((SMOKE_RC != 10)) || ! smoke_summary <"$WORK/smoke.json" | grep -q '^FAIL health'; then
            break
        fi
        ((SECONDS + 15 < deadline)) || break
        say "Airflow is not healthy yet: asking again in 15s (until ${SMOKE_TIMEOUT}s)"
        sleep 15
    done
    if ((SMOKE_RC == 3)) && grep -q 'airflow.api.url is not set' "$WORK/smoke.err"; then
        SMOKE_RC=0
        say "skipped: no Airflow API configured ([airflow.api] url in afbackup's config, or --smoke-url)."
        say "Check by hand that the scheduler heartbeats and that no task is stuck before unpausing anything."
    elif ((SMOKE_RC == 0 || SMOKE_RC == 10)); then
        smoke_summary <"$WORK/smoke.json" | while IFS= read -r line; do say "  $line"; done
        if ((SMOKE_RC == 0)); then
            say "Airflow runs on the restored database: every check passed."
        else
            loud "THE SMOKE TEST FAILED: Airflow is not fully back (the FAIL lines above say what)." \
                "Do NOT unpause DAGs until it passes; stuck tasks are listed above with DAG, task, run and pool."
        fi
    else
        cat "$WORK/smoke.err" >&2
        warn "the smoke test could not run (afbackup smoke exited $SMOKE_RC): check Airflow by hand before unpausing"
    fi
fi

# --------------------------------------------------------------------------------------------- 8. next steps
banner 8 "Next steps"
n=0
step() { n=$((n + 1)); say "$n. $1"; shift; local line; for line in "$@"; do say "     $line"; done; }
if ((SMOKE_RC == 10)); then
    step "FIX WHAT THE SMOKE TEST FOUND (step 7) and rerun it: afbackup smoke $BACKUP_ID --dsn <target>"
fi
if ((SCALE_BACK_FAILED)); then
    step "SCALE THE SCHEDULER BACK UP: kubectl -n $K8S_NS scale deployment/$K8S_DEPLOY --replicas=$ORIGINAL_REPLICAS"
fi
step "If the target is a new database, point every Airflow component at it" \
    "(AIRFLOW__DATABASE__SQL_ALCHEMY_CONN / your Helm values) and restart them."
if ((${#DAGS[@]})); then
    step "Unpause exactly the DAGs that were active (the restore recorded them; see its catch-up estimate first):" \
        "afbackup unpause --target-dsn '$TARGET_DSN' --dry-run   # then --yes" \
        "or one at a time, once each is safe to run: ${DAGS[*]/#/airflow dags unpause }"
else
    step "Unpause DAGs deliberately (airflow dags unpause <dag_id>): none was active in the backup."
fi
if [[ -n $K8S_DEPLOY ]]; then
    step "Check the scheduler's logs: kubectl -n $K8S_NS logs deployment/$K8S_DEPLOY --since=15m -f"
else
    step "Check the scheduler's logs for errors (database, Fernet key, import errors)."
fi
if [[ -n ${INFO[previous]:-} ]]; then
    step "Once the restored Airflow is accepted, drop the replaced database ${INFO[previous]}:" \
        "afbackup restore-cleanup --target-dsn '$TARGET_DSN' --yes"
fi
step "Take a fresh backup once Airflow runs: afbackup backup"
step "Run a DR drill after the incident: restore_drills/quarterly_drill.sh (or afbackup drill)."
step "If the incident involved a breach: rotate credentials — the connections' passwords and tokens, the Fernet" \
    "key (airflow rotate-fernet-key), the database and S3 credentials, and the GPG keys if they were exposed."
[[ -n ${M[5]:-} ]] && step "Recreate what the backup does not hold (environment/secrets backend): ${M[5]}"

((SCALE_BACK_FAILED)) && exit 1
((SMOKE_RC == 10)) && exit 10
exit 0
