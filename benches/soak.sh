#!/usr/bin/env bash
# Bounded soak of rolegate (not part of .ci/run):
#
#   DURATION=10m bash benches/soak.sh        # default 5m
#
# Starts a throwaway PostgreSQL cluster (provisioned from migrations/, plus
# pgbench's tables) and a release `rolegate serve` in front of it (client
# TLS, admin port), then for DURATION runs, all through the proxy:
#   * pgbench, prepared protocol, CLIENTS long-lived sessions (benches/soak/mix.sql:
#     a write transaction and a read), rate-limited to STEADY_RATE tps;
#   * pgbench -C, a new login per transaction at CHURN_RATE tps (extended
#     protocol; CHURN_PROTOCOL=simple sends literals instead);
#   * a psql loop sending statements the policy refuses (benches/soak/refused.sql:
#     DDL, SET ROLE, ALTER TABLE ... DISABLE ROW LEVEL SECURITY, SET row_security,
#     GRANT), counting the 42501s;
#   * a loop of clients killed with SIGKILL in the middle of a query.
# It samples rolegate's RSS, open fds and threads every SAMPLE_EVERY seconds
# to samples.csv and checks, exiting 1 if any fails:
#   * unexpected errors = 0 (pgbench failures, non-42501 errors, missing
#     refusals, failed logins);
#   * RSS flat: the last sample under load is within max(10%, 4 MiB) of the
#     sample at the end of the warm-up (the first fifth of the run);
#   * fds back to baseline once clients are gone (baseline + idle upstream
#     connections the proxy may keep for reuse + 2);
#   * rolegate_refusals_total (from /metrics) = the refusals sent;
#   * data intact: sum(abalance) = sum(delta), no refused DDL took effect.
# Results go to target/soak/<UTC time>/ (summary.md, samples.csv, logs), or
# SOAK_OUT. Needs the PostgreSQL server binaries (initdb, postgres, psql,
# pgbench) and openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-5m}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
CLIENTS=${CLIENTS:-4}
STEADY_RATE=${STEADY_RATE:-200}
CHURN_RATE=${CHURN_RATE:-10}
# `simple` sends literals: every transaction adds new texts to the bounded
# verdict cache, whose filling then shows as RSS growth (see summary.md).
CHURN_PROTOCOL=${CHURN_PROTOCOL:-extended}

to_seconds() {
    case "$1" in
        *h) echo $(("${1%h}" * 3600)) ;;
        *m) echo $(("${1%m}" * 60)) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}
DUR=$(to_seconds "$DURATION")
if ! [[ "$DUR" =~ ^[0-9]+$ ]] || [ "$DUR" -lt 60 ]; then
    echo "soak: DURATION must be at least 60s (got '$DURATION')" >&2
    exit 2
fi
WARMUP=$((DUR / 5))

die() {
    echo "soak: $*" >&2
    exit 2
}

# --- tools -----------------------------------------------------------------
BIN=""
if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/postgres" ]; then
    BIN=$(pg_config --bindir)
else
    BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
fi
for tool in initdb postgres psql pgbench; do
    [ -n "$BIN" ] && [ -x "$BIN/$tool" ] ||
        die "$tool not found (pg_config --bindir or /usr/lib/postgresql/*/bin); install it: apt-get install postgresql postgresql-client"
done
command -v openssl >/dev/null 2>&1 || die "openssl not found; install it: apt-get install openssl"

echo "== building rolegate (release)"
cargo build --release --locked --bin rolegate >/dev/null
RG=$ROOT/target/release/rolegate

OUT=${SOAK_OUT:-$ROOT/target/soak/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/rolegate-soak.XXXXXX)
chmod 755 "$WORK"

# --- cleanup: only the processes this script started -------------------------
PG_PID="" RG_PID="" JOBS=()
cleanup() {
    local p
    for p in "${JOBS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "$RG_PID" ] && kill "$RG_PID" 2>/dev/null || true
    if [ -n "$PG_PID" ]; then
        kill -INT "$PG_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PG_PID" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 40000))
        if port_free "$p"; then echo "$p"; return; fi
    done
    die "no free loopback port"
}
http_get() { # port path -> body
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3
    awk 'body {print} /^\r?$/ {body = 1}' <&3
    exec 3<&-
}
secret() { openssl rand -hex 16; }

# --- PostgreSQL ----------------------------------------------------------------
# PostgreSQL refuses to run as root: run it as nobody then.
RUN_AS=()
PGDIR=$WORK/pg
mkdir -p "$PGDIR/sock"
if [ "$(id -u)" = 0 ]; then
    RUN_AS=(setpriv --reuid="$(id -u nobody)" --regid="$(id -g nobody)" --clear-groups --)
    chown -R nobody "$PGDIR"
fi
chmod 700 "$PGDIR"
SUPER_PW=$(secret) MIG_PW=$(secret) RT_PW=$(secret) WEB_PW=$(secret)
printf '%s\n' "$SUPER_PW" >"$PGDIR/pw"
[ ${#RUN_AS[@]} -gt 0 ] && chown nobody "$PGDIR/pw"
echo "== initdb"
"${RUN_AS[@]}" "$BIN/initdb" -D "$PGDIR/data" -U postgres --auth=scram-sha-256 \
    --pwfile="$PGDIR/pw" -E UTF8 --locale=C >"$OUT/initdb.log" 2>&1 ||
    { cat "$OUT/initdb.log" >&2; die "initdb failed"; }
printf 'local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n' >"$PGDIR/data/pg_hba.conf"
PGPORT=$(free_port)
"${RUN_AS[@]}" "$BIN/postgres" -D "$PGDIR/data" -c listen_addresses=127.0.0.1 -p "$PGPORT" \
    -c unix_socket_directories="$PGDIR/sock" -c fsync=off -c max_connections=200 \
    -c shared_buffers=64MB >"$OUT/postgres.log" 2>&1 &
PG_PID=$!
direct() { # user password db args...
    local u=$1 pw=$2 db=$3
    shift 3
    PGPASSWORD=$pw "$BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U "$u" -d "$db" "$@"
}
for i in $(seq 300); do
    direct postgres "$SUPER_PW" postgres -c 'select 1' >/dev/null 2>&1 && break
    kill -0 "$PG_PID" 2>/dev/null || { cat "$OUT/postgres.log" >&2; die "postgres exited"; }
    [ "$i" = 300 ] && die "postgres did not start"
    sleep 0.1
done
echo "== provisioning (migrations/, pgbench -i)"
direct postgres "$SUPER_PW" postgres -v database=app -v migrator=app_migrator \
    -v migrator_password="$MIG_PW" -v runtime=app_user -v runtime_password="$RT_PW" \
    -f migrations/001_roles.sql >"$OUT/provision.log" 2>&1
direct app_migrator "$MIG_PW" app -f migrations/002_app_schema.sql >>"$OUT/provision.log" 2>&1
# As the migrator, so default privileges give the runtime role DML on them.
PGPASSWORD=$MIG_PW "$BIN/pgbench" -i -s 1 -q -h 127.0.0.1 -p "$PGPORT" -U app_migrator app \
    >>"$OUT/provision.log" 2>&1

# --- rolegate ----------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" >/dev/null 2>&1
printf '%s' "$RT_PW" >"$WORK/runtime.pw"
printf '%s' "$MIG_PW" >"$WORK/migrator.pw"
chmod 600 "$WORK"/*.pw "$WORK/tls.key"
PORT=$(free_port)
ADMIN=$(free_port)
cat >"$WORK/rolegate.toml" <<EOF
[admin]
address = "127.0.0.1:$ADMIN"

[listen]
address = "127.0.0.1:$PORT"
[listen.tls]
mode = "require"
cert_file = "$WORK/tls.crt"
key_file = "$WORK/tls.key"

[upstream]
host = "127.0.0.1"
port = $PGPORT
database = "app"
tls = "disable"
[upstream.runtime]
user = "app_user"
password_file = "$WORK/runtime.pw"
[upstream.migration]
user = "app_migrator"
password_file = "$WORK/migrator.pw"

[[clients]]
name = "web"
password_scram = "$(printf %s "$WEB_PW" | "$RG" scram-hash)"
EOF
RUST_LOG=${RUST_LOG:-warn} "$RG" serve --config "$WORK/rolegate.toml" >"$OUT/rolegate.log" 2>&1 &
RG_PID=$!
for i in $(seq 150); do
    [ "$(http_get "$ADMIN" /healthz 2>/dev/null)" = ok ] && ! port_free "$PORT" && break
    kill -0 "$RG_PID" 2>/dev/null || { cat "$OUT/rolegate.log" >&2; die "rolegate exited"; }
    [ "$i" = 150 ] && die "rolegate did not start"
    sleep 0.1
done
URL="postgresql://web:$WEB_PW@127.0.0.1:$PORT/app?sslmode=require"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$RG_PID/status"; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$RG_PID/status"; }
fds() { ls "/proc/$RG_PID/fd" | wc -l; }
START=$(date +%s)
sample() { # phase
    echo "$(($(date +%s) - START)),$(rss_kib),$(fds),$(threads),$1" >>"$OUT/samples.csv"
}
echo "t_s,rss_kib,fds,threads,phase" >"$OUT/samples.csv"
FD_BASE=$(fds)
RSS_BASE=$(rss_kib)
sample idle

# --- workload ------------------------------------------------------------------------
echo "== soak: ${DUR}s (warm-up ${WARMUP}s), results in $OUT"
DEADLINE=$((START + DUR))
rate_arg() { [ "$1" -gt 0 ] && echo "-R $1"; }
# shellcheck disable=SC2046
"$BIN/pgbench" -n -M prepared -c "$CLIENTS" -j 2 -T "$DUR" $(rate_arg "$STEADY_RATE") -P 60 \
    -f benches/soak/mix.sql "$URL" >"$OUT/pgbench_steady.log" 2>&1 &
STEADY=$!
JOBS+=("$STEADY")
# shellcheck disable=SC2046
"$BIN/pgbench" -n -M "$CHURN_PROTOCOL" -C -c 2 -j 1 -T "$DUR" $(rate_arg "$CHURN_RATE") -P 60 \
    -f benches/soak/mix.sql "$URL" >"$OUT/pgbench_churn.log" 2>&1 &
CHURN=$!
JOBS+=("$CHURN")

PER_RUN=$(grep -c -- '-- refused$' benches/soak/refused.sql)
refusal_loop() {
    local runs=0 refused=0 bad=0 out
    while [ "$(date +%s)" -lt "$DEADLINE" ]; do
        out=$("$BIN/psql" "$URL" -X -v ON_ERROR_STOP=0 -f benches/soak/refused.sql 2>&1 || true)
        runs=$((runs + 1))
        local n
        n=$(grep -c 'ERROR:  42501' <<<"$out" || true)
        refused=$((refused + n))
        # Anything but the expected refusals, or a session that did not survive them.
        if [ "$n" != "$PER_RUN" ] || ! grep -q still-usable <<<"$out" ||
            grep -E 'ERROR|FATAL' <<<"$out" | grep -vq 'ERROR:  42501'; then
            bad=$((bad + 1))
            printf '%s\n---\n' "$out" >>"$OUT/refusal_errors.log"
        fi
        sleep 0.5
    done
    echo "$runs $refused $bad" >"$OUT/refusal_loop.result"
}
refusal_loop &
JOBS+=($!)
REFUSAL_JOB=$!

kill_loop() {
    local runs=0 p
    while [ "$(date +%s)" -lt "$DEADLINE" ]; do
        "$BIN/psql" "$URL" -X -q -c 'select pg_sleep(3)' >/dev/null 2>&1 &
        p=$!
        sleep 1
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
        runs=$((runs + 1))
        sleep 1
    done
    echo "$runs" >"$OUT/kill_loop.result"
}
kill_loop &
JOBS+=($!)
KILL_JOB=$!

while [ "$(date +%s)" -lt "$DEADLINE" ]; do
    kill -0 "$RG_PID" 2>/dev/null || { cat "$OUT/rolegate.log" >&2; die "rolegate died during the soak"; }
    sample load
    sleep "$SAMPLE_EVERY"
done
set +e
wait "$STEADY"
STEADY_RC=$?
wait "$CHURN"
CHURN_RC=$?
wait "$REFUSAL_JOB" "$KILL_JOB"
set -e
JOBS=()

# --- after: clients gone -----------------------------------------------------------
# Idle upstream connections the proxy keeps for reuse (if it does) hold fds.
SETTLED=no
for _ in $(seq 120); do
    POOLED=$(direct postgres "$SUPER_PW" app -c "select count(*) from pg_stat_activity where usename = 'app_user'")
    ACTIVE=$(http_get "$ADMIN" /metrics | awk '/^rolegate_active_sessions\{role="runtime"\}/ {print $2}')
    FD_END=$(fds)
    if [ "$FD_END" -le $((FD_BASE + POOLED + 2)) ] && [ "${ACTIVE:-0}" = 0 ]; then
        SETTLED=yes
        break
    fi
    sleep 0.5
done
sample after
RSS_AFTER=$(rss_kib)
METRICS=$(http_get "$ADMIN" /metrics)
REFUSALS_METRIC=$(awk '/^rolegate_refusals_total/ {s += $2} END {print s + 0}' <<<"$METRICS")
read -r REF_RUNS REF_SENT REF_BAD <"$OUT/refusal_loop.result"
REF_EXPECTED=$((REF_RUNS * PER_RUN))
KILLED=$(cat "$OUT/kill_loop.result")

pgbench_field() { # file pattern
    { grep -m1 "$2" "$1" || true; } | grep -oE '[0-9]+(\.[0-9]+)?' | head -n1 || true
}
STEADY_TX=$(pgbench_field "$OUT/pgbench_steady.log" 'number of transactions actually processed')
CHURN_TX=$(pgbench_field "$OUT/pgbench_churn.log" 'number of transactions actually processed')
STEADY_FAILED=$(pgbench_field "$OUT/pgbench_steady.log" 'number of failed transactions')
CHURN_FAILED=$(pgbench_field "$OUT/pgbench_churn.log" 'number of failed transactions')
PG_ABORTS=$(cat "$OUT"/pgbench_*.log | grep -c 'aborted' || true)
UNEXPECTED=$((${STEADY_FAILED:-0} + ${CHURN_FAILED:-0} + PG_ABORTS + REF_BAD + (REF_SENT != REF_EXPECTED)))
[ "$STEADY_RC" = 0 ] || UNEXPECTED=$((UNEXPECTED + 1))
[ "$CHURN_RC" = 0 ] || UNEXPECTED=$((UNEXPECTED + 1))

BALANCED=$(direct postgres "$SUPER_PW" app -c \
    "select (select sum(abalance) from pgbench_accounts) = (select coalesce(sum(delta), 0) from pgbench_history)")
EVIL=$(direct postgres "$SUPER_PW" app -c "select count(*) from pg_class where relname = 'soak_evil'")
HISTORY=$(direct postgres "$SUPER_PW" app -c "select count(*) from pgbench_history")

# RSS at the end of the warm-up, mid-run and the last sample under load.
load_rss_at() { # seconds -> rss of the first load sample at or after it
    awk -F, -v t="$1" '$5 == "load" && $1 >= t {print $2; exit}' "$OUT/samples.csv"
}
RSS_WARM=$(load_rss_at "$WARMUP")
RSS_MID=$(load_rss_at $((DUR / 2)))
RSS_END=$(awk -F, '$5 == "load" {r = $2} END {print r}' "$OUT/samples.csv")
RSS_MAX=$(awk -F, '$5 == "load" && $2 > m {m = $2} END {print m}' "$OUT/samples.csv")
FD_MAX=$(awk -F, 'NR > 1 && $3 > m {m = $3} END {print m}' "$OUT/samples.csv")
# Least-squares slope of RSS after the warm-up, KiB per minute.
SLOPE=$(awk -F, -v w="$WARMUP" '$5 == "load" && $1 >= w {n++; sx += $1; sy += $2; sxx += $1*$1; sxy += $1*$2}
    END {d = n*sxx - sx*sx; if (n > 1 && d != 0) printf "%.1f", (n*sxy - sx*sy) / d * 60; else print "n/a"}' "$OUT/samples.csv")
ALLOW=$((RSS_WARM / 10 > 4096 ? RSS_WARM / 10 : 4096))

FAIL=0
check() { # name ok(0/1) detail
    local mark=PASS
    [ "$2" = 1 ] || { mark=FAIL; FAIL=1; }
    printf '| %s | %s | %s |\n' "$1" "$mark" "$3"
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }
{
    echo "## rolegate soak, $(date -u +%Y-%m-%dT%H:%MZ), ${DUR}s"
    echo
    echo "Workload: pgbench -M prepared -c $CLIENTS at $STEADY_RATE tps (${STEADY_TX:-?} tx); pgbench -C -M $CHURN_PROTOCOL -c 2 at $CHURN_RATE tps, a login per transaction (${CHURN_TX:-?} tx); $REF_RUNS psql runs of refused statements ($REF_SENT refusals); $KILLED clients SIGKILLed mid-query. $HISTORY history rows."
    echo
    echo "| check | result | detail |"
    echo "|---|---|---|"
    check "unexpected errors" $((UNEXPECTED == 0)) "$UNEXPECTED (pgbench failed tx ${STEADY_FAILED:-0}+${CHURN_FAILED:-0}, aborted clients $PG_ABORTS, exit codes $STEADY_RC/$CHURN_RC, bad refusal runs $REF_BAD, refusals $REF_SENT of $REF_EXPECTED)"
    check "RSS flat after warm-up" $((RSS_END <= RSS_WARM + ALLOW)) "idle $(mib "$RSS_BASE"), warm-up end $(mib "$RSS_WARM"), middle $(mib "$RSS_MID"), end $(mib "$RSS_END"), max $(mib "$RSS_MAX"), after clients left $(mib "$RSS_AFTER"); allowed +$(mib "$ALLOW"); trend $SLOPE KiB/min"
    check "fds back to baseline" $([ "$SETTLED" = yes ] && echo 1 || echo 0) "baseline $FD_BASE, peak $FD_MAX, after $FD_END (idle upstream connections kept: $POOLED, active sessions: ${ACTIVE:-?})"
    check "rolegate_refusals_total" $((REFUSALS_METRIC == REF_SENT)) "$REFUSALS_METRIC in /metrics, $REF_SENT refusals seen by psql"
    check "data intact" $([ "$BALANCED" = t ] && [ "$EVIL" = 0 ] && echo 1 || echo 0) "sum(abalance) = sum(delta): $BALANCED; refused CREATE TABLE left no table: $([ "$EVIL" = 0 ] && echo yes || echo no)"
} >"$OUT/summary.md"
cat "$OUT/summary.md"
echo
echo "samples: $OUT/samples.csv"
exit "$FAIL"
