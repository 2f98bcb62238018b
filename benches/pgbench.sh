#!/usr/bin/env bash
# End-to-end benchmark: pgbench against PostgreSQL directly, through HAProxy
# in TCP mode (the no-inspection floor), through PgBouncer, and through
# rolegate, interleaved over several rounds, in two variants ("legs"): TLS
# on both legs (client-proxy and proxy-server) and plaintext on both. Plus
# each proxy's CPU per statement, its memory, its memory per idle session,
# and optionally a soak of rolegate under literal-heavy traffic.
#
#   bash benches/pgbench.sh
#   ROUNDS=5 DURATION=20 OUT=benches/results/latest.json bash benches/pgbench.sh
#   LEGS=tls WORKLOADS="select_simple select1_latency" bash benches/pgbench.sh
#   SOAK_MINUTES=30 bash benches/pgbench.sh
#
# Knobs (environment variables, defaults in brackets):
#   ROUNDS [3]          rounds; each runs every workload against every target,
#                       the target order rotating from round to round
#   DURATION [15]       seconds per pgbench run (-T)
#   CLIENTS [8]         pgbench clients (-c) for the multi-client workloads
#                       (select_simple_c64/_c256 use 64 and 256)
#   JOBS [2]            pgbench threads (-j)
#   SCALE [10]          pgbench scale factor (-s) of the data set
#   LEGS [both]         tls | plain | both: TLS on both legs, plaintext on both
#                       legs (rolegate without [listen.tls] and with
#                       upstream.tls = "disable", PgBouncer with client and
#                       server TLS disabled, clients with sslmode=disable), or
#                       both variants in one run, interleaved, as two tables
#   SSLMODE [prefer]    libpq sslmode of the TLS leg: prefer | require |
#                       verify-ca | verify-full; SSLMODE=disable means LEGS=plain
#   WORKLOADS [all]     space-separated subset of: select_simple select_prepared
#                       tpcb select_connect select1_latency select_literals
#                       select_simple_c64 select_simple_c256
#   WARMUP [3]          seconds of untimed `pgbench -S` per target before round 1
#   PIN [1]             1: select1_latency runs with pgbench, the proxy and the
#                       PostgreSQL processes pinned to one CPU (taskset); 0: not
#   PIN_CPU [last allowed CPU]  the CPU for PIN=1
#   IDLE_SESSIONS [1000] idle sessions per proxy and leg for the memory-per-session
#                       measurement (0: skip)
#   SOAK_MINUTES [0]    >0: after the rounds, select_literals for this long
#                       against rolegate alone (first leg of LEGS), its RSS
#                       sampled into the JSON
#   SOAK_SAMPLE_EVERY [30]  seconds between the soak's RSS samples
#   POOL_MODE [session] session | transaction: rolegate's [pool] mode and
#                       PgBouncer's pool_mode. transaction: each proxy keeps
#                       POOL_SIZE upstream connections and leases one per
#                       transaction (PgBouncer 1.18 has no prepared statements
#                       in transaction mode, so select_prepared fails there)
#   POOL_SIZE [8]       transaction mode: rolegate's [pool] size and
#                       PgBouncer's default_pool_size
#   OUT [benches/results/latest.json]  where the JSON report goes
#   KEEP_TMP [0]        1: keep the temporary directory (logs, configs) for debugging;
#                       it is also kept after an error or a failed pgbench run
#
# Needs cargo, python3, openssl, taskset (util-linux) and the PostgreSQL
# server binaries; installs PostgreSQL, PgBouncer and HAProxy with apt-get
# when they are missing and we are root. Everything runs on 127.0.0.1 in a
# temporary directory that is removed on exit, Ctrl-C included. Not part of
# .ci/run: with the defaults it takes about an hour.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-8}
JOBS=${JOBS:-2}
SCALE=${SCALE:-10}
SSLMODE_GIVEN=${SSLMODE:+yes}
SSLMODE=${SSLMODE:-prefer}
LEGS=${LEGS:-}
ALL_WORKLOADS="select_simple select_prepared tpcb select_connect select1_latency select_literals select_simple_c64 select_simple_c256"
WORKLOADS=${WORKLOADS:-$ALL_WORKLOADS}
WARMUP=${WARMUP:-3}
PIN=${PIN:-1}
PIN_CPU=${PIN_CPU:-}
IDLE_SESSIONS=${IDLE_SESSIONS:-1000}
SOAK_MINUTES=${SOAK_MINUTES:-0}
SOAK_SAMPLE_EVERY=${SOAK_SAMPLE_EVERY:-30}
OUT=${OUT:-benches/results/latest.json}
KEEP_TMP=${KEEP_TMP:-0}
POOL_MODE=${POOL_MODE:-session}
POOL_SIZE=${POOL_SIZE:-8}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/benches/pgbench"
# A relative OUT is relative to where the script was started.
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac

die() { # %b: the messages embed "\n" and multi-line log tails
    printf 'pgbench.sh: error: %b\n' "$*" >&2
    exit 1
}
log() { echo "==> $*" >&2; }
warn() { echo "pgbench.sh: warning: $*" >&2; }

# ------------------------------------------------------------------ knobs --

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in ROUNDS DURATION CLIENTS JOBS SCALE WARMUP IDLE_SESSIONS SOAK_MINUTES SOAK_SAMPLE_EVERY POOL_SIZE; do
    is_uint "${!v}" || die "$v must be a non-negative integer, got '${!v}'"
done
((ROUNDS >= 1 && DURATION >= 1 && CLIENTS >= 1 && JOBS >= 1 && SCALE >= 1 && SOAK_SAMPLE_EVERY >= 1)) ||
    die "ROUNDS, DURATION, CLIENTS, JOBS, SCALE and SOAK_SAMPLE_EVERY must be at least 1"
case "$SSLMODE" in disable | prefer | require | verify-ca | verify-full) ;;
*) die "SSLMODE must be disable, prefer, require, verify-ca or verify-full, got '$SSLMODE'" ;;
esac
if [[ -z $LEGS ]]; then
    # SSLMODE=disable alone keeps its old meaning: the plaintext benchmark.
    if [[ $SSLMODE == disable ]]; then LEGS=plain; else LEGS=both; fi
fi
case "$LEGS" in
tls) LEG_LIST=(tls) ;;
plain) LEG_LIST=(plain) ;;
both) LEG_LIST=(tls plain) ;;
*) die "LEGS must be tls, plain or both, got '$LEGS'" ;;
esac
if [[ $SSLMODE == disable && $LEGS != plain ]]; then
    die "SSLMODE=disable is the plaintext variant, but LEGS=$LEGS asks for the TLS leg too;\nuse LEGS=plain (or leave LEGS unset), or an SSLMODE for the TLS leg: prefer, require, verify-ca or verify-full"
fi
if [[ $LEGS == plain && -n $SSLMODE_GIVEN && $SSLMODE != disable ]]; then
    die "LEGS=plain connects with sslmode=disable everywhere; SSLMODE=$SSLMODE only applies to the TLS leg (LEGS=tls or both)"
fi
[[ -n ${WORKLOADS// /} ]] || die "WORKLOADS is empty (known: $ALL_WORKLOADS)"
for w in $WORKLOADS; do
    [[ " $ALL_WORKLOADS " == *" $w "* ]] || die "unknown workload '$w' in WORKLOADS (known: $ALL_WORKLOADS)"
done
case "$PIN" in 0 | 1) ;; *) die "PIN must be 0 or 1, got '$PIN'" ;; esac
case "$POOL_MODE" in session | transaction) ;; *) die "POOL_MODE must be session or transaction, got '$POOL_MODE'" ;; esac
((POOL_SIZE >= 1)) || die "POOL_SIZE must be at least 1"
case "$KEEP_TMP" in 0 | 1) ;; *) die "KEEP_TMP must be 0 or 1, got '$KEEP_TMP'" ;; esac
# The CPUs this script may use; PIN_CPU must be one of them.
# (Cpus_allowed_list is a list of ranges: "0-3,6".)
ALLOWED_CPUS=""
IFS=, read -r -a cpu_ranges < <(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status)
for r in "${cpu_ranges[@]}"; do
    for ((c = ${r%-*}; c <= ${r#*-}; c++)); do ALLOWED_CPUS+="${ALLOWED_CPUS:+ }$c"; done
done
[[ -n $ALLOWED_CPUS ]] || die "cannot read the CPUs this process may run on from /proc/self/status"
ALL_CPUS=${ALLOWED_CPUS// /,}
if [[ -z $PIN_CPU ]]; then
    PIN_CPU=${ALLOWED_CPUS##* }
fi
if ! is_uint "$PIN_CPU" || [[ " $ALLOWED_CPUS " != *" $PIN_CPU "* ]]; then
    die "PIN_CPU must be one of the CPUs this process may run on ($ALL_CPUS), got '$PIN_CPU'"
fi

# The caller's libpq settings must not change how we reach our own servers.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^PG' || true)

# pgbench clients per workload; sizes PostgreSQL's and the proxies' limits.
workload_client_count() {
    case $1 in select1_latency) echo 1 ;; select_simple_c64) echo 64 ;; select_simple_c256) echo 256 ;; *) echo "$CLIENTS" ;; esac
}
MAX_CLIENTS=$CLIENTS
for w in $WORKLOADS; do
    n=$(workload_client_count "$w")
    ((n <= MAX_CLIENTS)) || MAX_CLIENTS=$n
done
# pgbench's -T includes logging in every client: 256 TLS + SCRAM logins on a
# busy 2-core machine take seconds.
if ((MAX_CLIENTS >= 64 && DURATION < 10)); then
    echo "pgbench.sh: warning: DURATION=$DURATION: the ${MAX_CLIENTS}-client workloads may spend most of each run logging in (pgbench's -T includes it); 10 or more is safer" >&2
fi
# The most sessions one proxy holds at once: idle sessions or pgbench clients.
ROOM=$((IDLE_SESSIONS > MAX_CLIENTS ? IDLE_SESSIONS : MAX_CLIENTS))
RG_POOL_MAX_IDLE=100

# ---------------------------------------------------------------- cleanup --

TMP=""
PG_PID=""
HAP_PID=""
IDLE_PID=""
SOAK_PID=""
FAILED_RUNS=0
declare -A RG_PID=() RG_PORT=() RG_ADMIN=() PGB_PID=() PGB_PORT=()

stop_pid() { # pid signal seconds: signal, wait up to N seconds, then SIGKILL
    local pid=$1 sig=$2 secs=$3 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? leg
    trap - EXIT INT TERM
    stop_pid "$IDLE_PID" TERM 10
    stop_pid "$SOAK_PID" TERM 10
    for leg in "${!RG_PID[@]}"; do stop_pid "${RG_PID[$leg]}" TERM 10; done
    for leg in "${!PGB_PID[@]}"; do stop_pid "${PGB_PID[$leg]}" TERM 10; done
    stop_pid "$HAP_PID" TERM 10
    # SIGINT: PostgreSQL's fast shutdown.
    stop_pid "$PG_PID" INT 20
    wait 2>/dev/null || true
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $KEEP_TMP == 1 ]] || ((rc != 130 && (rc != 0 || FAILED_RUNS > 0))); then
            # Keep the logs after a failure or a failed run (not after
            # Ctrl-C): they say why (failed-*.out: pgbench's output).
            ((FAILED_RUNS == 0)) || echo "pgbench.sh: $FAILED_RUNS pgbench run(s) failed" >&2
            echo "pgbench.sh: logs and configs kept in $TMP (remove it by hand)" >&2
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "pgbench.sh: interrupted" >&2; exit 130' INT TERM

# ------------------------------------------------------------------ tools --

APT_UPDATED=0
apt_install() {
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
        die "$1 is missing; install it (Debian/Ubuntu, as root: apt-get install $*)"
    fi
    log "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # The packages must not start their own services on 5432/6432.
    local policy_rc=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        policy_rc=1
    fi
    if ((APT_UPDATED == 0)); then
        apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
    ((policy_rc == 0)) || rm -f /usr/sbin/policy-rc.d
}

# Like src/demo/cluster.rs: PATH (resolving symlinks), pg_config --bindir,
# then Debian's /usr/lib/postgresql/<version>/bin, newest first.
find_pg_bindir() {
    local d
    if command -v initdb >/dev/null 2>&1; then
        d=$(dirname "$(readlink -f "$(command -v initdb)")")
        [[ -x $d/initdb && -x $d/postgres ]] && { echo "$d"; return 0; }
    fi
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null || true)
        [[ -n $d && -x $d/initdb && -x $d/postgres ]] && { echo "$d"; return 0; }
    fi
    while read -r d; do
        [[ -x $d/initdb && -x $d/postgres ]] && { echo "$d"; return 0; }
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
    return 1
}

command -v cargo >/dev/null || die "cargo not found; install Rust (https://rustup.rs)"
command -v python3 >/dev/null || apt_install python3
command -v openssl >/dev/null || apt_install openssl
command -v taskset >/dev/null || die "taskset not found; install util-linux (apt-get install util-linux)"
BINDIR=$(find_pg_bindir) || {
    apt_install postgresql postgresql-client
    BINDIR=$(find_pg_bindir) || die "PostgreSQL server binaries still not found after installing"
}
for t in initdb postgres pg_isready psql pgbench; do
    [[ -x $BINDIR/$t ]] || die "$BINDIR/$t is missing; install the full PostgreSQL server package (apt-get install postgresql)"
done
PSQL=$BINDIR/psql
PGBENCH=$BINDIR/pgbench
command -v pgbouncer >/dev/null || apt_install pgbouncer
PGBOUNCER=$(command -v pgbouncer) || die "pgbouncer not found; apt-get install pgbouncer"
# (No `| head -1` on a producer anywhere: with pipefail, a producer killed by
# SIGPIPE after head exits fails the pipeline, and set -e the script.)
PGB_VERSION=$("$PGBOUNCER" --version | awk 'NR == 1 {print $2}')
# 1.18 is the first release this script was written against (SCRAM both ways,
# client TLS settings as used below).
python3 - "$PGB_VERSION" <<'EOF' || die "PgBouncer $PGB_VERSION is too old; 1.18 or newer is needed"
import sys
v = tuple(int(x) for x in sys.argv[1].split(".")[:2])
sys.exit(0 if v >= (1, 18) else 1)
EOF
# Debian's haproxy is in /usr/sbin, which a non-root PATH may lack.
HAPROXY=$(command -v haproxy || true)
[[ -n $HAPROXY || ! -x /usr/sbin/haproxy ]] || HAPROXY=/usr/sbin/haproxy
if [[ -z $HAPROXY ]]; then
    apt_install haproxy
    HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
    [[ -x $HAPROXY ]] || die "haproxy still not found after installing (apt-get install haproxy)"
fi
HAP_VERSION=$("$HAPROXY" -v | sed -n -E '1s/^HA-?Proxy version ([^ ]+).*/\1/p')

# Every login is a TCP connection; 1,000 idle sessions need ~2,000 descriptors
# in each proxy, 256 clients ~512.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= 2 * ROOM + 500)) ||
    warn "open-file limit is $(ulimit -n); $ROOM sessions through a proxy need about $((2 * ROOM + 500))"

# ------------------------------------------------------------------ build --

log "building rolegate and the idle_sessions example (release)"
(cd "$ROOT" && cargo build --release --locked --bin rolegate) || die "cargo build --release failed"
(cd "$ROOT" && cargo build --release --locked --example idle_sessions) || die "cargo build --release --example idle_sessions failed"
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

TMP=$(mktemp -d /tmp/rolegate-bench.XXXXXX)
# The unprivileged server users must be able to reach their files in here.
chmod 755 "$TMP"
mkdir -p "$TMP/bin" "$TMP/tls" "$TMP/haproxy" "$TMP/pgsock"
for leg in "${LEG_LIST[@]}"; do mkdir -p "$TMP/pgbouncer-$leg"; done
# Copies: someone else's build in the shared target dir must not swap the
# binary under a running benchmark.
cp "$TARGET_DIR/release/rolegate" "$TMP/bin/rolegate"
cp "$TARGET_DIR/release/examples/idle_sessions" "$TMP/bin/idle_sessions"
RG_BIN=$TMP/bin/rolegate
IDLE_BIN=$TMP/bin/idle_sessions

# ------------------------------------------------------------ run-as user --

# PostgreSQL, PgBouncer and HAProxy refuse to (or should not) run as root:
# run them as nobody.
RUN_AS=()
if [[ $(id -u) == 0 ]]; then
    id nobody >/dev/null 2>&1 || die "running as root and there is no 'nobody' user to run PostgreSQL, PgBouncer and HAProxy as"
    command -v setpriv >/dev/null || die "setpriv (util-linux) is needed to drop root privileges (apt-get install util-linux)"
    RUN_AS=(setpriv --reuid="$(id -u nobody)" --regid="$(id -g nobody)" --clear-groups --)
fi
give_to_server() { [[ ${#RUN_AS[@]} == 0 ]] || chown -R nobody:"$(id -gn nobody)" "$@"; }
give_to_server "$TMP/pgsock" "$TMP/haproxy"
for leg in "${LEG_LIST[@]}"; do give_to_server "$TMP/pgbouncer-$leg"; done

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}
secret() { openssl rand -hex 16; }

# -------------------------------------------------------------------- TLS --

# One ECDSA P-256 server certificate (from a throwaway CA) for every server,
# so every target pays for the same kind of handshake.
log "generating an ECDSA P-256 certificate"
(
    cd "$TMP/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.crt -days 2 -subj "/CN=rolegate bench CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out server.crt -days 2 -extfile ext.cnf 2>/dev/null
) || die "openssl could not create the test certificate"
CA=$TMP/tls/ca.crt

leg_sslmode() { case $1 in tls) echo "$SSLMODE" ;; plain) echo disable ;; esac; }

# ------------------------------------------------------------- PostgreSQL --

SU_PW=$(secret)
MIG_PW=$(secret)
RT_PW=$(secret)
WEB_PW=$(secret)
ADMIN_PW=$(secret)
# "web"'s password at PgBouncer: see start_pgbouncer.
PGB_PW=$RT_PW
DB=app
MIGRATOR=app_migrator
RUNTIME=app_user

# Room for: the sessions of the run or idle measurement in progress, plus per
# leg what the proxies keep open between runs (PgBouncer's session pool holds
# a server connection per client it has seen; rolegate keeps up to
# RG_POOL_MAX_IDLE released upstream sessions), plus the script's own.
PG_MAX_CONNECTIONS=$((ROOM + ${#LEG_LIST[@]} * (MAX_CLIENTS + RG_POOL_MAX_IDLE) + 60))
PGDATA=$TMP/pgdata
log "initdb ($BINDIR)"
printf '%s\n' "$SU_PW" >"$TMP/pwfile"
mkdir -m 700 "$PGDATA"
give_to_server "$TMP/pwfile" "$PGDATA"
(cd "$TMP" && HOME=$TMP "${RUN_AS[@]}" "$BINDIR/initdb" -D "$PGDATA" --auth=scram-sha-256 -U postgres \
    -E UTF8 --locale=C --pwfile="$TMP/pwfile") >"$TMP/initdb.log" 2>&1 ||
    die "initdb failed; its output:\n$(cat "$TMP/initdb.log")"
rm -f "$TMP/pwfile"
cp "$TMP/tls/server.crt" "$PGDATA/server.crt"
cp "$TMP/tls/server.key" "$PGDATA/server.key"
chmod 600 "$PGDATA/server.key"
cat >"$PGDATA/pg_hba.conf" <<EOF
# Written by benches/pgbench.sh: SCRAM only, loopback only, TLS or not.
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
EOF
cat >>"$PGDATA/postgresql.conf" <<EOF

# benches/pgbench.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TMP/pgsock'
password_encryption = 'scram-sha-256'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
max_connections = $PG_MAX_CONNECTIONS
shared_buffers = 128MB
# A throwaway cluster: keep it CPU-bound so disk noise does not swamp the
# proxies' overhead.
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
give_to_server "$PGDATA"

start_postgres() {
    local i
    for _ in 1 2 3 4 5; do
        PG_PORT=$(free_port)
        : >"$TMP/postgres.log"
        give_to_server "$TMP/postgres.log"
        (cd "$TMP" && HOME=$TMP exec "${RUN_AS[@]}" "$BINDIR/postgres" -D "$PGDATA" -p "$PG_PORT") \
            >>"$TMP/postgres.log" 2>&1 &
        PG_PID=$!
        for ((i = 0; i < 600; i++)); do
            if ! kill -0 "$PG_PID" 2>/dev/null; then
                PG_PID=""
                break
            fi
            "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 && return 0
            sleep 0.1
        done
        if [[ -z $PG_PID ]] && grep -q -e "could not bind" -e "Address already in use" "$TMP/postgres.log"; then
            continue # someone took the port first
        fi
        die "PostgreSQL did not start; server log:\n$(tail -20 "$TMP/postgres.log")"
    done
    die "PostgreSQL could not find a free port"
}
log "starting PostgreSQL (max_connections = $PG_MAX_CONNECTIONS)"
start_postgres

su_psql() { # psql as the superuser on database $1, then psql arguments
    local db=$1
    shift
    PGPASSWORD=$SU_PW PGSSLMODE=prefer "$PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db" "$@"
}

log "provisioning the role model (migrations/001_roles.sql)"
su_psql postgres -v database="$DB" -v migrator="$MIGRATOR" -v migrator_password="$MIG_PW" \
    -v runtime="$RUNTIME" -v runtime_password="$RT_PW" -f "$ROOT/migrations/001_roles.sql" ||
    die "migrations/001_roles.sql failed"

# As the migration role: its default privileges (001_roles.sql) grant DML on
# the new tables in schema public to the runtime role, which finds them
# through the default search_path ("$user", public).
log "pgbench -i -s $SCALE as $MIGRATOR"
PGPASSWORD=$MIG_PW PGSSLMODE=prefer "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" \
    -U "$MIGRATOR" "$DB" >"$TMP/pgbench-init.log" 2>&1 ||
    die "pgbench -i failed:\n$(cat "$TMP/pgbench-init.log")"
GRANTS=$(PGPASSWORD=$RT_PW PGSSLMODE=prefer "$PSQL" -X -A -t -h 127.0.0.1 -p "$PG_PORT" -U "$RUNTIME" -d "$DB" -c \
    "select count(*) from pgbench_branches; select has_table_privilege('pgbench_history', 'INSERT')") ||
    die "the runtime role cannot read the pgbench tables"
[[ $(echo "$GRANTS" | tail -1) == t ]] || die "the runtime role has no INSERT on pgbench_history"

# await_login pid port user password sslmode: 0 once a login + `select 1`
# works, 1 if the process died, 2 after 30 seconds of failed logins.
await_login() {
    local pid=$1 port=$2 user=$3 password=$4 sslmode=$5 deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if PGPASSWORD=$password PGSSLMODE=$sslmode PGSSLROOTCERT=$CA PGCONNECT_TIMEOUT=5 \
            "$PSQL" -X -q -A -t -h 127.0.0.1 -p "$port" -U "$user" -d "$DB" -c 'select 1' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null || return 1
    return 2
}

# --------------------------------------------------------------- rolegate --

# One rolegate per leg: TLS on both legs (client TLS "allow", upstream
# "prefer"), or plaintext on both (no [listen.tls], upstream "disable").
start_rolegate() { # leg
    local leg=$1 verifier port admin pid listen_tls upstream_tls conf=$TMP/rolegate-$1.toml
    local logf=$TMP/rolegate-$1.log
    verifier=$(printf %s "$WEB_PW" | "$RG_BIN" scram-hash) || die "rolegate scram-hash failed"
    if [[ $leg == tls ]]; then
        listen_tls=$(printf '[listen.tls]\nmode = "allow"\ncert_file = "%s"\nkey_file = "%s"' \
            "$TMP/tls/server.crt" "$TMP/tls/server.key")
        upstream_tls=prefer
    else
        listen_tls="# No [listen.tls]: plaintext clients only."
        upstream_tls=disable
    fi
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        admin=$(free_port)
        cat >"$conf" <<EOF
[listen]
address = "127.0.0.1:$port"
$listen_tls

[admin]
address = "127.0.0.1:$admin"

[upstream]
host = "127.0.0.1"
port = $PG_PORT
database = "$DB"
tls = "$upstream_tls"
[upstream.runtime]
user = "$RUNTIME"
password = "$RT_PW"
[upstream.migration]
user = "$MIGRATOR"
password = "$MIG_PW"

[[clients]]
name = "web"
password_scram = "$verifier"

[policy]
mode = "enforce"

# The defaults, spelled out: released runtime upstream sessions are reset
# with DISCARD ALL and reused. POOL_MODE=transaction: POOL_SIZE connections
# leased per transaction.
[pool]
enabled = true
max_idle = $RG_POOL_MAX_IDLE
mode = "$POOL_MODE"
size = $POOL_SIZE
wait_timeout = "60s"
EOF
        "$RG_BIN" check --config "$conf" --offline >"$TMP/rolegate-$leg-check.log" 2>&1 ||
            die "rolegate check --offline rejected the generated config ($leg):\n$(cat "$TMP/rolegate-$leg-check.log")"
        : >"$logf"
        "$RG_BIN" serve --config "$conf" >>"$logf" 2>&1 &
        pid=$!
        RG_PID[$leg]=$pid
        local rc=0
        await_login "$pid" "$port" web "$WEB_PW" "$(leg_sslmode "$leg")" || rc=$?
        if ((rc == 0)); then
            RG_PORT[$leg]=$port
            RG_ADMIN[$leg]=$admin
            return 0
        fi
        if ((rc == 1)) && grep -q "cannot listen" "$logf"; then
            RG_PID[$leg]=""
            continue # someone took the port first
        fi
        die "rolegate ($leg) did not start or does not accept logins; its log:\n$(tail -20 "$logf")"
    done
    die "rolegate could not find a free port"
}

# -------------------------------------------------------------- PgBouncer --

start_pgbouncer() { # leg
    local leg=$1 port pid dir=$TMP/pgbouncer-$1 logf=$TMP/pgbouncer-$1.log tls_lines pool_size=$((ROOM + 100))
    [[ $POOL_MODE == session ]] || pool_size=$POOL_SIZE
    # Clients log in with SCRAM against a stored verifier, as rolegate's
    # [[clients]] do. PgBouncer up to at least 1.20 cannot combine that with a
    # forced user's plaintext password for the server login (pgbouncer
    # issues #944, #1461: it reuses the client's SCRAM keys), so "web" gets
    # the runtime role's own verifier, copied from pg_authid, and PgBouncer
    # passes the client's SCRAM keys through to the server: PgBouncer's
    # intended SCRAM set-up, and its cheapest per login.
    local verifier
    verifier=$(su_psql postgres -A -t -c "select rolpassword from pg_authid where rolname = '$RUNTIME'") ||
        die "cannot read the runtime role's SCRAM verifier"
    [[ $verifier == SCRAM-SHA-256\$* ]] || die "the runtime role's password is not a SCRAM verifier"
    printf '"web" "%s"\n"pgb_admin" "%s"\n' \
        "$verifier" "$(printf %s "$ADMIN_PW" | "$RG_BIN" scram-hash)" >"$dir/userlist.txt"
    if [[ $leg == tls ]]; then
        cp "$TMP/tls/server.crt" "$TMP/tls/server.key" "$dir/"
        chmod 600 "$dir/server.key"
        tls_lines="client_tls_sslmode = allow
client_tls_cert_file = $dir/server.crt
client_tls_key_file = $dir/server.key
server_tls_sslmode = prefer"
    else
        tls_lines="client_tls_sslmode = disable
server_tls_sslmode = disable"
    fi
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        cat >"$dir/pgbouncer.ini" <<EOF
[databases]
$DB = host=127.0.0.1 port=$PG_PORT dbname=$DB user=$RUNTIME password=$RT_PW

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
pidfile = $dir/pgbouncer.pid
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
admin_users = pgb_admin
pool_mode = $POOL_MODE
server_reset_query = DISCARD ALL
max_client_conn = $((ROOM + 200))
default_pool_size = $pool_size
max_db_connections = 0
$tls_lines
ignore_startup_parameters = extra_float_digits
EOF
        chmod 600 "$dir/userlist.txt" "$dir/pgbouncer.ini"
        give_to_server "$dir"
        : >"$logf"
        (cd "$TMP" && HOME=$TMP exec "${RUN_AS[@]}" "$PGBOUNCER" "$dir/pgbouncer.ini") >>"$logf" 2>&1 &
        pid=$!
        PGB_PID[$leg]=$pid
        local rc=0
        await_login "$pid" "$port" web "$PGB_PW" "$(leg_sslmode "$leg")" || rc=$?
        if ((rc == 0)); then
            PGB_PORT[$leg]=$port
            return 0
        fi
        if ((rc == 1)) && grep -q -e "Address already in use" -e "bind" "$logf"; then
            PGB_PID[$leg]=""
            continue
        fi
        die "PgBouncer ($leg) did not start or does not accept logins; its log:\n$(tail -20 "$logf")"
    done
    die "PgBouncer could not find a free port"
}

# ---------------------------------------------------------------- HAProxy --

# HAProxy in TCP mode: no inspection at all, the floor for a proxy in the
# path. One instance serves both legs: it relays bytes, so a client asking
# for TLS (sslmode) gets TLS end to end with PostgreSQL, and a plaintext
# client stays plaintext. No health checks: a check would be a connection
# (or a login) on the server between runs.
HAP_PORT=""
HAP_MAXCONN=$((ROOM + 200))
start_haproxy() {
    local conf=$TMP/haproxy/haproxy.cfg logf=$TMP/haproxy.log
    for _ in 1 2 3 4 5; do
        HAP_PORT=$(free_port)
        cat >"$conf" <<EOF
# Written by benches/pgbench.sh: plain TCP relay to PostgreSQL.
global
    maxconn $HAP_MAXCONN

defaults
    mode tcp
    timeout connect 10s
    timeout client 1h
    timeout server 1h

frontend postgres
    bind 127.0.0.1:$HAP_PORT
    default_backend postgres

backend postgres
    server postgres 127.0.0.1:$PG_PORT
EOF
        give_to_server "$TMP/haproxy"
        "$HAPROXY" -c -q -f "$conf" >"$TMP/haproxy-check.log" 2>&1 ||
            die "haproxy -c rejected the generated config:\n$(cat "$TMP/haproxy-check.log")"
        : >"$logf"
        # -db: stay in the foreground, one process (its threads: nbthread
        # defaults to the CPUs it may use).
        (cd "$TMP" && HOME=$TMP exec "${RUN_AS[@]}" "$HAPROXY" -db -f "$conf") >>"$logf" 2>&1 &
        HAP_PID=$!
        local rc=0 leg=${LEG_LIST[0]}
        await_login "$HAP_PID" "$HAP_PORT" "$RUNTIME" "$RT_PW" "$(leg_sslmode "$leg")" || rc=$?
        ((rc != 0)) || return 0
        if ((rc == 1)) && grep -q -i -e "cannot bind" -e "Address already in use" "$logf"; then
            HAP_PID=""
            continue
        fi
        die "HAProxy did not start or does not relay logins; its log:\n$(tail -20 "$logf")"
    done
    die "HAProxy could not find a free port"
}

for leg in "${LEG_LIST[@]}"; do
    log "starting rolegate ($leg)"
    start_rolegate "$leg"
    log "starting PgBouncer $PGB_VERSION ($leg)"
    start_pgbouncer "$leg"
done
log "starting HAProxy $HAP_VERSION (TCP mode)"
start_haproxy

# -------------------------------------------------------------- measuring --

TARGETS=(direct haproxy pgbouncer rolegate)

# Direct and HAProxy logins are the runtime role itself (HAProxy has no
# logins of its own); PgBouncer and rolegate logins are "web".
target_port() { # leg target
    case $2 in
    direct) echo "$PG_PORT" ;;
    haproxy) echo "$HAP_PORT" ;;
    pgbouncer) echo "${PGB_PORT[$1]}" ;;
    rolegate) echo "${RG_PORT[$1]}" ;;
    esac
}
target_user() {
    case $2 in direct | haproxy) echo "$RUNTIME" ;; *) echo web ;; esac
}
target_password() {
    case $2 in direct | haproxy) echo "$RT_PW" ;; pgbouncer) echo "$PGB_PW" ;; rolegate) echo "$WEB_PW" ;; esac
}
target_pid() {
    case $2 in direct) echo "" ;; haproxy) echo "$HAP_PID" ;; pgbouncer) echo "${PGB_PID[$1]}" ;; rolegate) echo "${RG_PID[$1]}" ;; esac
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# utime + stime in clock ticks (fields 14 and 15; the command name in field 2
# is cut off first in case it holds spaces), all threads included.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
CLK_TCK=$(getconf CLK_TCK)

# rolegate's policy counters from its /metrics: "<allowed> <refused>"
# statements so far (all reasons; empty when /metrics cannot be read).
rg_policy_counts() { # leg
    python3 - "${RG_ADMIN[$1]}" <<'EOF' || true
import sys, urllib.request
try:
    text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
except Exception:
    sys.exit(0)
allowed = refused = 0.0
for line in text.splitlines():
    name, _, rest = line.partition("{")
    if line.startswith("#") or not rest:
        continue
    value = float(line.rsplit(" ", 1)[1])
    if name == "rolegate_statements_total" and 'verdict="allowed"' in rest:
        allowed += value
    elif name == "rolegate_refusals_total":
        refused += value
print(int(allowed), int(refused))
EOF
}

workload_args() {
    case $1 in
    select_simple | select_simple_c64 | select_simple_c256) echo "-S -M simple" ;;
    select_prepared) echo "-S -M prepared" ;;
    tpcb) echo "" ;;
    select_connect) echo "-S -C" ;;
    select1_latency) echo "-f $HERE/select1.sql" ;;
    select_literals) echo "-M simple -f $HERE/select_literals.sql" ;;
    esac
}
# Statements per transaction: BEGIN, 3 UPDATEs, SELECT, INSERT, END for
# TPC-B; for a script of ours, its lines ending in ";" (one statement a line).
script_statements() { grep -c -E '^[^-\\].*;[[:space:]]*$' "$1"; }
workload_statements() {
    case $1 in
    tpcb) echo 7 ;;
    select1_latency) script_statements "$HERE/select1.sql" ;;
    select_literals) script_statements "$HERE/select_literals.sql" ;;
    *) echo 1 ;;
    esac
}
workload_clients() {
    local n
    n=$(workload_client_count "$1")
    if ((n == 1)); then echo "-c 1 -j 1"; else echo "-c $n -j $((JOBS < n ? JOBS : n))"; fi
}
workload_pinned() { [[ $PIN == 1 && $1 == select1_latency ]]; }

META=$TMP/meta.tsv
RESULTS=$TMP/results.tsv
SOAK=$TMP/soak.tsv
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }
: >"$META"
printf 'round\tleg\tworkload\ttarget\tposition\ttps\tlatency_ms\ttransactions\tfailed\tstatements\tcpu_ms\trss_before_kb\trss_after_kb\tconnection_ms\tinitial_connection_ms\tpolicy_allowed\tpolicy_refused\tpinned_cpu\tstatus\terror\n' >"$RESULTS"

# pgbench_exec leg target duration outfile pgbench-args...: replaces the
# calling (sub)shell with pgbench (under timeout, and taskset when
# PIN_PREFIX is set), so a background run's pid is the timeout process.
PIN_PREFIX=()
pgbench_exec() {
    local leg=$1 target=$2 duration=$3 out=$4
    shift 4
    export PGHOST=127.0.0.1 PGDATABASE=$DB PGSSLROOTCERT=$CA PGCONNECT_TIMEOUT=30
    PGPORT=$(target_port "$leg" "$target")
    PGUSER=$(target_user "$leg" "$target")
    PGPASSWORD=$(target_password "$leg" "$target")
    PGSSLMODE=$(leg_sslmode "$leg")
    export PGPORT PGUSER PGPASSWORD PGSSLMODE
    # -n everywhere: pgbench's VACUUM is refused on runtime sessions.
    exec timeout --signal=INT $((duration * 3 + 120)) "${PIN_PREFIX[@]}" "$PGBENCH" -n -T "$duration" "$@" \
        >"$out" 2>&1
}
run_pgbench() { (pgbench_exec "$@"); }

# Pinning (PIN=1, select1_latency): pgbench runs under taskset; the proxy's
# threads and PostgreSQL's postmaster and every child of it (the backend
# serving the run may be one a proxy pooled earlier) are moved to PIN_CPU,
# then back to every allowed CPU after the run. Backends forked while the
# postmaster is pinned inherit the pin; they are moved back too.
pg_processes() {
    echo "$PG_PID"
    ps -o pid= --ppid "$PG_PID" 2>/dev/null || true
}
set_affinity() { # cpu-list pid... -> how many processes could not be moved
    local cpus=$1 p bad=0
    shift
    for p in "$@"; do
        taskset -a -p -c "$cpus" "$p" >/dev/null 2>&1 || { kill -0 "$p" 2>/dev/null && bad=$((bad + 1)); }
    done
    echo "$bad"
}
pin_begin() { # pid of the proxy or ""
    local bad
    # shellcheck disable=SC2046,SC2086 # one pid a word; no proxy for direct
    bad=$(set_affinity "$PIN_CPU" $1 $(pg_processes))
    ((bad == 0)) || warn "could not pin $bad process(es) to CPU $PIN_CPU"
    PIN_PREFIX=(taskset -c "$PIN_CPU")
}
pin_end() {
    # shellcheck disable=SC2046,SC2086
    set_affinity "$ALL_CPUS" $1 $(pg_processes) >/dev/null
    PIN_PREFIX=()
}

field() { # regex-with-one-group file
    sed -n -E "s/$1/\\1/p" "$2" | sed -n 1p
}

one_run() { # round leg workload target position
    local round=$1 leg=$2 w=$3 target=$4 pos=$5 pid cpu0 cpu1 rss0="" rss1="" cpu_ms="" status=ok err=""
    local tps lat txns failed conn conn0 stmts counts0="" counts1="" allowed="" refused="" pinned="" out=$TMP/last-pgbench.out
    pid=$(target_pid "$leg" "$target")
    if workload_pinned "$w"; then
        pin_begin "$pid"
        pinned=$PIN_CPU
    fi
    [[ $target != rolegate ]] || counts0=$(rg_policy_counts "$leg")
    if [[ -n $pid ]]; then
        rss0=$(rss_kb "$pid")
        cpu0=$(cpu_ticks "$pid")
    fi
    # shellcheck disable=SC2046 # word splitting of the argument lists is intended
    if ! run_pgbench "$leg" "$target" "$DURATION" "$out" $(workload_clients "$w") $(workload_args "$w"); then
        status=failed
        err=$(grep -m3 -i -e error -e fatal -e abort "$out" | tr '\t\n' '  ' | cut -c1-300)
        warn "round $round $leg $w on $target: pgbench failed: $err"
        cp "$out" "$TMP/failed-$round-$leg-$w-$target.out"
    fi
    if [[ -n $pid ]]; then
        kill -0 "$pid" 2>/dev/null || die "$target ($leg, pid $pid) died during round $round $w; see $TMP"
        cpu1=$(cpu_ticks "$pid")
        rss1=$(rss_kb "$pid")
        cpu_ms=$(((cpu1 - cpu0) * 1000 / CLK_TCK))
    fi
    [[ -z $pinned ]] || pin_end "$pid"
    if [[ $target == rolegate ]]; then
        counts1=$(rg_policy_counts "$leg")
        if [[ -n $counts0 && -n $counts1 ]]; then
            allowed=$((${counts1% *} - ${counts0% *}))
            refused=$((${counts1#* } - ${counts0#* }))
        fi
    fi
    tps=$(field '^tps = ([0-9.]+).*' "$out")
    lat=$(field '^latency average = ([0-9.]+) ms.*' "$out")
    txns=$(field '^number of transactions actually processed: ([0-9]+).*' "$out")
    failed=$(field '^number of failed transactions: ([0-9]+).*' "$out")
    conn=$(field '^average connection time = ([0-9.]+) ms.*' "$out")
    conn0=$(field '^initial connection time = ([0-9.]+) ms.*' "$out")
    stmts=$((${txns:-0} * $(workload_statements "$w")))
    if [[ $status == ok && ${txns:-} == 0 ]]; then
        status=failed
        err="no transaction finished within the ${DURATION}s run (pgbench's -T includes logging in every client); raise DURATION"
        warn "round $round $leg $w on $target: $err"
        cp "$out" "$TMP/failed-$round-$leg-$w-$target.out"
    elif [[ $status == ok && (-z $tps || -z $txns) ]]; then
        status=failed
        err="could not read pgbench's output"
        warn "round $round $leg $w on $target: $err"
        cp "$out" "$TMP/failed-$round-$leg-$w-$target.out"
    fi
    if [[ $status == ok && ${failed:-0} != 0 ]]; then
        warn "round $round $leg $w on $target: $failed failed transactions"
    fi
    if [[ -n $refused && $refused != 0 ]]; then
        warn "round $round $leg $w on rolegate: the policy refused $refused statement(s); see $TMP/rolegate-$leg.log"
    fi
    [[ $status == ok ]] || FAILED_RUNS=$((FAILED_RUNS + 1))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$leg" "$w" "$target" \
        "$pos" "$tps" "$lat" "$txns" "$failed" "$stmts" "$cpu_ms" "$rss0" "$rss1" "$conn" "$conn0" "$allowed" "$refused" \
        "$pinned" "$status" "$err" >>"$RESULTS"
    printf '    %-18s %-5s %-10s tps %-12s latency %-8s ms' "$w" "$leg" "$target" "${tps:-n/a}" "${lat:-n/a}" >&2
    [[ -n $cpu_ms && $stmts -gt 0 ]] && printf '   cpu %s ms' "$cpu_ms" >&2
    [[ -z $conn0 ]] || (($(workload_client_count "$w") < 64)) || printf '   logins %s ms' "$conn0" >&2
    [[ -z $pinned ]] || printf '   (pinned to CPU %s)' "$pinned" >&2
    printf '\n' >&2
}

upstream_sessions() {
    su_psql postgres -A -t -c "select count(*) from pg_stat_activity where usename = '$RUNTIME'"
}

wait_upstream_below() { # n seconds
    local i n
    for ((i = 0; i < $2 * 10; i++)); do
        n=$(upstream_sessions) || n=""
        [[ $n =~ ^[0-9]+$ ]] && ((n < $1)) && return 0
        sleep 0.1
    done
    return 1
}

idle_measure() { # leg target
    local leg=$1 target=$2 pid port url i n rss0 rss1 rss2 sslmode tag=$1-$2
    pid=$(target_pid "$leg" "$target")
    port=$(target_port "$leg" "$target")
    sslmode=$(leg_sslmode "$leg")
    url="postgres://web:$(target_password "$leg" "$target")@127.0.0.1:$port/$DB?sslmode=$sslmode"
    rss0=$(rss_kb "$pid")
    : >"$TMP/idle-$tag.out"
    PGSSLROOTCERT=$CA "$IDLE_BIN" "$url" "$IDLE_SESSIONS" >"$TMP/idle-$tag.out" 2>"$TMP/idle-$tag.err" &
    IDLE_PID=$!
    for ((i = 0; i < 6000; i++)); do
        grep -q '^READY' "$TMP/idle-$tag.out" && break
        kill -0 "$IDLE_PID" 2>/dev/null ||
            die "idle_sessions against $target ($leg) failed:\n$(tail -5 "$TMP/idle-$tag.err")"
        sleep 0.1
    done
    grep -q '^READY' "$TMP/idle-$tag.out" || die "idle_sessions against $target ($leg) did not finish logging in within 10 minutes"
    n=$(upstream_sessions)
    rss1=$(rss_kb "$pid")
    stop_pid "$IDLE_PID" TERM 30
    wait "$IDLE_PID" 2>/dev/null || true
    IDLE_PID=""
    if [[ $target == pgbouncer ]]; then
        # Session mode keeps released server connections pooled; close them so
        # they do not count against max_connections later.
        PGPASSWORD=$ADMIN_PW PGSSLMODE=$sslmode PGSSLROOTCERT=$CA "$PSQL" -X -q -h 127.0.0.1 -p "$port" \
            -U pgb_admin -d pgbouncer -c "RECONNECT $DB" >/dev/null 2>&1 || warn "PgBouncer ($leg) RECONNECT failed"
    fi
    # Each rolegate's [pool] keeps up to max_idle released upstream
    # connections for reuse; everything beyond that must close.
    local keep=$((${#LEG_LIST[@]} * RG_POOL_MAX_IDLE + 20))
    wait_upstream_below "$keep" 120 || warn "upstream sessions of $target ($leg) did not close within 2 minutes"
    rss2=$(rss_kb "$pid")
    meta "legs.$leg.idle_sessions.$target.sessions" "$IDLE_SESSIONS"
    meta "legs.$leg.idle_sessions.$target.upstream_sessions_open" "$n"
    meta "legs.$leg.idle_sessions.$target.rss_0_sessions_kb" "$rss0"
    meta "legs.$leg.idle_sessions.$target.rss_with_sessions_kb" "$rss1"
    meta "legs.$leg.idle_sessions.$target.rss_after_close_kb" "$rss2"
    printf '    %-5s %-10s RSS %s KiB -> %s KiB with %s idle sessions (%s upstream) -> %s KiB after closing\n' \
        "$leg" "$target" "$rss0" "$rss1" "$IDLE_SESSIONS" "$n" "$rss2" >&2
}

# Every path, checked once: does the client leg use TLS (psql's \conninfo),
# does the server see TLS (pg_stat_ssl)? The plaintext leg must be plaintext
# end to end; in the TLS leg anything but TLS on both is reported.
check_path() { # leg target
    local leg=$1 target=$2 out client server
    out=$(PGPASSWORD=$(target_password "$leg" "$target") PGSSLMODE=$(leg_sslmode "$leg") PGSSLROOTCERT=$CA \
        "$PSQL" -X -A -t -h 127.0.0.1 -p "$(target_port "$leg" "$target")" -U "$(target_user "$leg" "$target")" \
        -d "$DB" -c "select ssl from pg_stat_ssl where pid = pg_backend_pid()" -c '\conninfo' 2>&1) ||
        die "cannot query through $target ($leg):\n$out"
    server=${out%%$'\n'*}
    if [[ $out == *"SSL connection"* ]]; then client=t; else client=f; fi
    meta "legs.$leg.client_tls.$target" "$client"
    meta "legs.$leg.upstream_tls.$target" "$server"
    if [[ $leg == plain && ($client != f || $server != f) ]]; then
        die "the plaintext leg through $target uses TLS (client $client, server $server)"
    fi
    if [[ $leg == tls && ($client != t || $server != t) ]]; then
        warn "the TLS leg through $target is not TLS on both legs (client $client, server $server)"
    fi
}

# ------------------------------------------------------------- the facts --

meta parameters.rounds "$ROUNDS"
meta parameters.duration_s "$DURATION"
meta parameters.clients "$CLIENTS"
meta parameters.jobs "$JOBS"
meta parameters.scale "$SCALE"
meta parameters.legs "${LEG_LIST[*]}"
meta parameters.sslmode "$SSLMODE"
meta parameters.warmup_s "$WARMUP"
meta parameters.idle_sessions "$IDLE_SESSIONS"
meta parameters.workloads "$WORKLOADS"
meta parameters.pin "$PIN"
meta parameters.pin_cpu "$PIN_CPU"
meta parameters.soak_minutes "$SOAK_MINUTES"
meta parameters.soak_sample_every_s "$SOAK_SAMPLE_EVERY"
meta parameters.rolegate_policy_mode enforce
meta parameters.pool_mode "$POOL_MODE"
if [[ $POOL_MODE == transaction ]]; then
    meta parameters.pool_size "$POOL_SIZE"
    meta parameters.rolegate_pool "mode transaction, size $POOL_SIZE"
else
    meta parameters.rolegate_pool "enabled, max_idle $RG_POOL_MAX_IDLE"
fi
meta parameters.pgbouncer_pool_mode "$POOL_MODE"
meta parameters.pgbouncer_server_reset_query "DISCARD ALL"
meta parameters.haproxy "mode tcp, one server (PostgreSQL), no health checks, maxconn $HAP_MAXCONN, default nbthread; TLS passes through"
meta parameters.tls_certificate "ECDSA P-256"
meta parameters.postgresql_settings "fsync=off synchronous_commit=off full_page_writes=off shared_buffers=128MB max_connections=$PG_MAX_CONNECTIONS"
for leg in "${LEG_LIST[@]}"; do
    meta "legs.$leg.sslmode" "$(leg_sslmode "$leg")"
    if [[ $leg == tls ]]; then
        meta "legs.$leg.config.rolegate" 'listen.tls.mode = "allow", upstream.tls = "prefer"'
        meta "legs.$leg.config.pgbouncer" "client_tls_sslmode = allow, server_tls_sslmode = prefer"
    else
        meta "legs.$leg.config.rolegate" 'no [listen.tls], upstream.tls = "disable"'
        meta "legs.$leg.config.pgbouncer" "client_tls_sslmode = disable, server_tls_sslmode = disable"
    fi
    meta "legs.$leg.config.haproxy" "TCP relay: the client's own sslmode=$(leg_sslmode "$leg") end to end with PostgreSQL"
done
meta machine.nproc "$(nproc)"
meta machine.cpus_allowed "$ALL_CPUS"
meta machine.cpu_model "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
meta machine.kernel "$(uname -sr)"
meta machine.memory_kb "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
meta machine.loadavg_at_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta versions.postgresql "$("$BINDIR/postgres" --version | sed 's/^postgres (PostgreSQL) //')"
meta versions.pgbench "$("$PGBENCH" --version | sed 's/^pgbench (PostgreSQL) //')"
meta versions.pgbouncer "$PGB_VERSION"
meta versions.haproxy "$HAP_VERSION"
rev=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
[[ -z $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] || rev="$rev+dirty"
meta versions.rolegate "$rev"
meta versions.rustc "$(rustc --version 2>/dev/null || echo unknown)"
for w in $ALL_WORKLOADS; do
    args="-n -T $DURATION $(workload_clients "$w") $(workload_args "$w" | sed "s|$HERE/||")"
    meta "workloads.$w.pgbench_args" "${args% }"
    meta "workloads.$w.statements_per_transaction" "$(workload_statements "$w")"
    ! workload_pinned "$w" || meta "workloads.$w.pinned_cpu" "$PIN_CPU"
done

log "checking TLS on every path"
for leg in "${LEG_LIST[@]}"; do
    for target in "${TARGETS[@]}"; do check_path "$leg" "$target"; done
done

rss_facts() { # phase: RSS of every proxy instance
    local leg
    for leg in "${LEG_LIST[@]}"; do
        meta "legs.$leg.rss.rolegate.${1}_kb" "$(rss_kb "${RG_PID[$leg]}")"
        meta "legs.$leg.rss.pgbouncer.${1}_kb" "$(rss_kb "${PGB_PID[$leg]}")"
    done
    meta "rss.haproxy.${1}_kb" "$(rss_kb "$HAP_PID")"
}
rss_facts start

if ((IDLE_SESSIONS > 0)); then
    log "idle sessions: $IDLE_SESSIONS through each proxy, per leg"
    for leg in "${LEG_LIST[@]}"; do
        # rolegate first: it closes its upstream connections with the sessions.
        idle_measure "$leg" rolegate
        idle_measure "$leg" pgbouncer
    done
fi

rss_facts before_runs

if ((WARMUP > 0)); then
    log "warm-up: ${WARMUP}s of pgbench -S per target and leg (not recorded)"
    for leg in "${LEG_LIST[@]}"; do
        for target in "${TARGETS[@]}"; do
            run_pgbench "$leg" "$target" "$WARMUP" "$TMP/last-pgbench.out" -S -c "$CLIENTS" -j "$JOBS" ||
                die "warm-up against $target ($leg) failed:\n$(tail -5 "$TMP/last-pgbench.out")"
        done
    done
fi

# Round r: the targets' order rotates by one (round 1: direct, HAProxy,
# PgBouncer, rolegate; round 2: HAProxy, PgBouncer, rolegate, direct; ...),
# and with both legs, the leg that goes first alternates. Per workload, each
# leg runs its four targets back to back, so a leg's ratios come from runs
# interleaved with each other.
NT=${#TARGETS[@]}
log "benchmark: $ROUNDS rounds x workloads [$WORKLOADS] x $NT targets x legs [${LEG_LIST[*]}], ${DURATION}s each"
for ((round = 1; round <= ROUNDS; round++)); do
    order=()
    for ((k = 0; k < NT; k++)); do order+=("${TARGETS[$(((round - 1 + k) % NT))]}"); done
    legs=("${LEG_LIST[@]}")
    if ((${#legs[@]} == 2 && round % 2 == 0)); then legs=("${legs[1]}" "${legs[0]}"); fi
    log "round $round/$ROUNDS, legs: ${legs[*]}, targets: ${order[*]}"
    for w in $WORKLOADS; do
        for leg in "${legs[@]}"; do
            pos=0
            for target in "${order[@]}"; do
                pos=$((pos + 1))
                one_run "$round" "$leg" "$w" "$target" "$pos"
            done
        done
    done
done

rss_facts after_runs
for leg in "${LEG_LIST[@]}"; do
    meta "legs.$leg.rss.rolegate.peak_kb" "$(hwm_kb "${RG_PID[$leg]}")"
    meta "legs.$leg.rss.pgbouncer.peak_kb" "$(hwm_kb "${PGB_PID[$leg]}")"
    meta "legs.$leg.rolegate_log_lines" "$(wc -l <"$TMP/rolegate-$leg.log")"
done
meta rss.haproxy.peak_kb "$(hwm_kb "$HAP_PID")"
meta machine.loadavg_at_end "$(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------- soak --

# select_literals against rolegate alone for SOAK_MINUTES, its RSS sampled
# every SOAK_SAMPLE_EVERY seconds: does RSS level off under traffic whose
# every statement text is new? (benches/soak.sh covers leaks under a mixed,
# rate-limited workload with logins, refusals and killed clients.)
soak() {
    local leg=${LEG_LIST[0]} pid secs=$((SOAK_MINUTES * 60)) t0 next=0 rc=0 out=$TMP/soak-pgbench.out
    local counts0 counts1 txns failed tps
    pid=${RG_PID[$leg]}
    log "soak: select_literals against rolegate ($leg) for $SOAK_MINUTES min, RSS every ${SOAK_SAMPLE_EVERY}s"
    printf 't_s\tphase\trss_kb\tcpu_ms\n' >"$SOAK"
    sample() { printf '%s\t%s\t%s\t%s\n' "$((SECONDS - t0))" "$1" "$(rss_kb "$pid")" \
        "$(($(cpu_ticks "$pid") * 1000 / CLK_TCK))" >>"$SOAK"; }
    counts0=$(rg_policy_counts "$leg")
    t0=$SECONDS
    # shellcheck disable=SC2046
    (pgbench_exec "$leg" rolegate "$secs" "$out" $(workload_clients select_literals) \
        $(workload_args select_literals)) &
    SOAK_PID=$!
    while kill -0 "$SOAK_PID" 2>/dev/null; do
        if ((SECONDS - t0 >= next)); then
            sample load
            next=$((next + SOAK_SAMPLE_EVERY))
            printf '    soak %4ss: RSS %s KiB\n' "$((SECONDS - t0))" "$(rss_kb "$pid")" >&2
        fi
        sleep 1
    done
    wait "$SOAK_PID" || rc=$?
    SOAK_PID=""
    kill -0 "$pid" 2>/dev/null || die "rolegate ($leg) died during the soak; see $TMP"
    sample after
    counts1=$(rg_policy_counts "$leg")
    txns=$(field '^number of transactions actually processed: ([0-9]+).*' "$out")
    failed=$(field '^number of failed transactions: ([0-9]+).*' "$out")
    tps=$(field '^tps = ([0-9.]+).*' "$out")
    if ((rc != 0)) || [[ -z $txns ]]; then
        cp "$out" "$TMP/failed-soak.out"
        warn "soak: pgbench failed (exit $rc): $(grep -m3 -i -e error -e abort "$out" | tr '\n' ' ')"
        meta soak.status failed
        FAILED_RUNS=$((FAILED_RUNS + 1))
    else
        meta soak.status ok
    fi
    meta soak.leg "$leg"
    meta soak.minutes "$SOAK_MINUTES"
    meta soak.sample_every_s "$SOAK_SAMPLE_EVERY"
    meta soak.pgbench_args "-n -T $secs $(workload_clients select_literals) -M simple -f select_literals.sql"
    meta soak.transactions "${txns:-}"
    meta soak.failed "${failed:-}"
    meta soak.tps "${tps:-}"
    if [[ -n $counts0 && -n $counts1 ]]; then
        meta soak.policy_allowed "$((${counts1% *} - ${counts0% *}))"
        meta soak.policy_refused "$((${counts1#* } - ${counts0#* }))"
    fi
}
if ((SOAK_MINUTES > 0)); then
    soak
fi

mkdir -p "$(dirname "$OUT")"
report_args=(--results "$RESULTS" --meta "$META" --out "$OUT")
[[ ! -s $SOAK ]] || report_args+=(--soak "$SOAK")
python3 "$HERE/report.py" "${report_args[@]}" || die "report.py failed; raw results are in $RESULTS"
log "wrote $OUT"
