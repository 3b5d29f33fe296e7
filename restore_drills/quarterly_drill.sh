#!/usr/bin/env bash
# The quarterly DR drill, as CI runs it (deploy/ci/dr-drill.yml): `afbackup drill` against a scratch
# PostgreSQL server, then the Markdown report published to stdout (and the GitHub job summary).
#
# Inputs (environment variables; see restore_drills/README.md):
#   AFBACKUP_CONFIG        afbackup's config file (read by afbackup itself; default /etc/afbackup/config.toml)
#   AFBACKUP               the afbackup command (default: afbackup), e.g. "python -m afbackup"
#   DRILL_BACKUP           the backup to drill: an id or latest (default: latest)
#   DRILL_REPORT_DIR       where drill-report.json, drill-report.md, drill-junit.xml go (default: ./drill-report)
#   DRILL_SCRATCH_DSN      the server for the scratch database (default: the config's [drill] scratch_dsn; when
#                          that is empty too, a throwaway PostgreSQL is started here and removed on exit)
#   DRILL_RTO_TARGET       optional, e.g. 30m: the drill fails when the recovery takes longer
#   DRILL_RPO_TARGET       optional, e.g. 26h: the drill fails when the backup is older
#   DRILL_FERNET_KEY_FILE  optional: the escrowed source Fernet key; a restored connection must decrypt with it
#   DRILL_LIVE             auto (default), 1 or 0: `drill --live` (start Airflow on the restored database, smoke
#                          test, canary DAG, RTO to the first successful task). auto: when the Airflow CLI the live
#                          drill would start exists here ([drill] airflow_command, else [airflow] command with the
#                          local executor); the log says which, and why
#   DRILL_RTO_LIVE_TARGET  optional, e.g. 45m: with --live, the drill fails when the first task succeeds later
#   PG_BIN                 optional: the directory with initdb/pg_ctl for the throwaway server
#   PYTHON                 the interpreter used to read JSON (default: python3)
#   GITHUB_STEP_SUMMARY    set by GitHub Actions: the Markdown report is appended there
#
# Exit code: afbackup drill's: 0 passed, 10 a check failed or a target was missed, anything else is the
# afbackup exit code of what stopped the drill before it could report (README.md, "Exit codes");
# 4 when no scratch server could be provisioned.
set -euo pipefail

REPORT_DIR=${DRILL_REPORT_DIR:-./drill-report}
BACKUP=${DRILL_BACKUP:-latest}
PYTHON=${PYTHON:-python3}
read -r -a AFB <<<"${AFBACKUP:-afbackup}"

PG_TMP=""      # the throwaway server's directory (data, socket, log), when we started one
PG_DATA=""     # its data directory, once initdb made it
PG_BINDIR=""
PG_AS=()       # runuser -u postgres -- when we are root (PostgreSQL refuses to run as root)

log() { printf 'quarterly_drill: %s\n' "$*" >&2; }

# shellcheck disable=SC2329  # called by cleanup (the EXIT trap)
stop_postgres() {
    [[ -n $PG_DATA && -f $PG_DATA/postmaster.pid ]] || return 0
    log "stopping the throwaway PostgreSQL"
    "${PG_AS[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null 2>&1 \
        || "${PG_AS[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 \
        || log "WARNING: could not stop the throwaway PostgreSQL in $PG_DATA"
}

# shellcheck disable=SC2329  # the EXIT trap
cleanup() {
    local rc=$?
    set +e
    stop_postgres
    [[ -n $PG_TMP ]] && rm -rf "$PG_TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

find_pg_bin() {
    if [[ -n ${PG_BIN:-} ]]; then
        [[ -x $PG_BIN/initdb ]] && { printf '%s\n' "$PG_BIN"; return 0; }
        return 1
    fi
    local initdb
    if initdb=$(command -v initdb); then
        dirname "$(readlink -f "$initdb")"
        return 0
    fi
    local dir newest="" major=0  # Debian's layout: the newest major
    for dir in /usr/lib/postgresql/*/bin; do
        local m=${dir#/usr/lib/postgresql/}
        m=${m%%/*}
        if [[ -x $dir/initdb && $m =~ ^[0-9]+$ ]] && ((m > major)); then
            major=$m newest=$dir
        fi
    done
    [[ -n $newest ]] || return 1
    printf '%s\n' "$newest"
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
        || echo $((20000 + RANDOM % 40000))
}

# Starts a throwaway PostgreSQL on 127.0.0.1 (trust auth, superuser "postgres") and sets SCRATCH_DSN.
# Not in a subshell: the EXIT trap must know the server to stop it.
provision_postgres() {
    if ! PG_BINDIR=$(find_pg_bin); then
        log "ERROR: no DRILL_SCRATCH_DSN and no PostgreSQL server binaries (initdb, pg_ctl) to start a scratch" \
            "server: set DRILL_SCRATCH_DSN, or PG_BIN, or install the PostgreSQL server"
        exit 4
    fi
    if ((EUID == 0)); then
        if ! id postgres >/dev/null 2>&1; then
            log "ERROR: running as root and there is no 'postgres' user to run the scratch server as"
            exit 4
        fi
        PG_AS=(runuser -u postgres --)
    fi
    PG_TMP=$(mktemp -d "${TMPDIR:-/tmp}/afbackup-drill-pg.XXXXXX")
    chmod 0700 "$PG_TMP"
    ((EUID == 0)) && chown postgres: "$PG_TMP"
    if ! "${PG_AS[@]}" "$PG_BINDIR/initdb" -D "$PG_TMP/data" -U postgres --auth=trust -E UTF8 --no-locale \
            >"$PG_TMP/initdb.log" 2>&1; then
        log "ERROR: initdb failed:"
        cat "$PG_TMP/initdb.log" >&2
        exit 4
    fi
    PG_DATA=$PG_TMP/data
    local port attempt
    for attempt in 1 2 3; do
        port=$(free_port)
        if "${PG_AS[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -l "$PG_TMP/server.log" -w -t 60 \
                -o "-p $port -k $PG_TMP -c listen_addresses=127.0.0.1" start >/dev/null 2>&1; then
            log "started a throwaway PostgreSQL ($PG_BINDIR) on 127.0.0.1:$port, data in $PG_TMP;" \
                "it is stopped and removed on exit"
            SCRATCH_DSN="postgresql://postgres@127.0.0.1:$port/postgres"
            return 0
        fi
        log "PostgreSQL did not start on port $port (attempt $attempt)"
    done
    log "ERROR: could not start the throwaway PostgreSQL; its log:"
    tail -n 30 "$PG_TMP/server.log" >&2 || true
    exit 4
}

# configured KEY: the config's value of KEY (file or AFBACKUP_* variable), empty when unset or unreadable;
# a list is printed as its first item (a command's executable).
configured() {
    { "${AFB[@]}" config show --json 2>/dev/null || true; } | "$PYTHON" -c '
import json, sys
try:
    doc = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
for item in doc.get("values", []):
    value = item.get("value")
    if item.get("key") == sys.argv[1] and value:
        print(value[0] if isinstance(value, list) else value)
' "$1" 2>/dev/null || true
}

# Whether to drill with --live; sets LIVE (0/1) and says why on stderr.
decide_live() {
    local want=${DRILL_LIVE:-auto} cli
    case $want in
        0 | no | false) LIVE=0; log "not live: DRILL_LIVE=$want"; return 0 ;;
        1 | yes | true) LIVE=1; log "live: DRILL_LIVE=$want"; return 0 ;;
        auto) ;;
        *) log "ERROR: DRILL_LIVE must be auto, 1 or 0 (got '$want')"; exit 2 ;;
    esac
    cli=$(configured drill.airflow_command)
    if [[ -z $cli && $(configured airflow.executor) == local ]]; then
        cli=$(configured airflow.command)
    fi
    if [[ -n $cli ]] && command -v "$cli" >/dev/null 2>&1; then
        LIVE=1
        log "live: the Airflow CLI $cli is here: the drill starts Airflow on the restored database (drill --live)"
    else
        LIVE=0
        log "NOT live: no Airflow CLI here (${cli:-none configured}; set [drill] airflow_command): the drill proves the" \
            "database restores and Airflow's CLI reads it, not that a task runs (docs/smoke.md)"
    fi
}

publish() {  # publish FILE: stdout, and the GitHub job summary when there is one
    cat "$1"
    if [[ -n ${GITHUB_STEP_SUMMARY:-} ]]; then
        { cat "$1"; printf '\n'; } >>"$GITHUB_STEP_SUMMARY"
    fi
}

# --------------------------------------------------------------------------------------------- main
SCRATCH_DSN=${DRILL_SCRATCH_DSN:-}
if [[ -z $SCRATCH_DSN ]]; then
    if [[ -n $(configured drill.scratch_dsn) ]]; then
        log "using the config's [drill] scratch_dsn"
    else
        provision_postgres
    fi
fi

mkdir -p "$REPORT_DIR"
# A report left by an earlier run must never be published as this run's.
rm -f "$REPORT_DIR/drill-report.json" "$REPORT_DIR/drill-report.md" "$REPORT_DIR/drill-junit.xml"

args=(drill "$BACKUP" --report "$REPORT_DIR")
[[ -n $SCRATCH_DSN ]] && args+=(--scratch-dsn "$SCRATCH_DSN")
[[ -n ${DRILL_RTO_TARGET:-} ]] && args+=(--rto-target "$DRILL_RTO_TARGET")
[[ -n ${DRILL_RPO_TARGET:-} ]] && args+=(--rpo-target "$DRILL_RPO_TARGET")
[[ -n ${DRILL_FERNET_KEY_FILE:-} ]] && args+=(--fernet-key-file "$DRILL_FERNET_KEY_FILE")
LIVE=0
decide_live
if ((LIVE)); then
    args+=(--live)
    [[ -n ${DRILL_RTO_LIVE_TARGET:-} ]] && args+=(--rto-live-target "$DRILL_RTO_LIVE_TARGET")
fi

log "running: ${AFB[*]} ${args[*]}"
rc=0
# Its stdout is the Markdown report, which is also in the report directory: published from there below.
"${AFB[@]}" "${args[@]}" >/dev/null || rc=$?

if [[ -f $REPORT_DIR/drill-report.md ]]; then
    publish "$REPORT_DIR/drill-report.md"
else
    note=$(mktemp)
    printf '# afbackup DR drill: ERROR\n\n%s exited %s before it could write a report: see the job log.\n' \
        "\`afbackup drill\`" "$rc" >"$note"
    publish "$note"
    rm -f "$note"
fi
case $rc in
    0) log "drill passed" ;;
    10) log "drill FAILED: a check failed or a target was missed (exit 10); reports in $REPORT_DIR" ;;
    *) log "drill could not run: afbackup exited $rc (see README.md, \"Exit codes\")" ;;
esac
exit "$rc"
