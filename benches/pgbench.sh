#!/usr/bin/env bash
# End-to-end benchmark: pgbench against PostgreSQL directly, through
# PgBouncer, and through rolegate, interleaved over several rounds, plus
# rolegate's CPU per statement, its memory, and its memory per idle session.
#
#   bash benches/pgbench.sh
#   ROUNDS=5 DURATION=20 CLIENTS=8 OUT=benches/results/latest.json bash benches/pgbench.sh
#
# Knobs (environment variables, defaults in brackets):
#   ROUNDS [3]          rounds; each runs every workload against every target,
#                       the target order rotating from round to round
#   DURATION [15]       seconds per pgbench run (-T)
#   CLIENTS [8]         pgbench clients (-c) for the multi-client workloads
#   JOBS [2]            pgbench threads (-j)
#   SCALE [10]          pgbench scale factor (-s) of the data set
#   SSLMODE [prefer]    libpq sslmode for every target: disable | prefer |
#                       require | verify-ca | verify-full
#   WORKLOADS [all]     space-separated subset of: select_simple
#                       select_prepared tpcb select_connect select1_latency
#   WARMUP [3]          seconds of untimed `pgbench -S` per target before round 1
#   IDLE_SESSIONS [1000] idle sessions for the memory-per-session measurement (0: skip)
#   OUT [benches/results/latest.json]  where the JSON report goes
#   KEEP_TMP [0]        1: keep the temporary directory (logs, configs) for debugging
#
# Needs cargo, python3, openssl and the PostgreSQL server binaries; installs
# PostgreSQL and PgBouncer with apt-get when they are missing and we are root.
# Everything runs on 127.0.0.1 in a temporary directory that is removed on
# exit, Ctrl-C included. Not part of .ci/run: it takes ~15 minutes.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-8}
JOBS=${JOBS:-2}
SCALE=${SCALE:-10}
SSLMODE=${SSLMODE:-prefer}
WORKLOADS=${WORKLOADS:-select_simple select_prepared tpcb select_connect select1_latency}
WARMUP=${WARMUP:-3}
IDLE_SESSIONS=${IDLE_SESSIONS:-1000}
OUT=${OUT:-benches/results/latest.json}
KEEP_TMP=${KEEP_TMP:-0}

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

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in ROUNDS DURATION CLIENTS JOBS SCALE WARMUP IDLE_SESSIONS; do
    is_uint "${!v}" || die "$v must be a non-negative integer, got '${!v}'"
done
((ROUNDS >= 1 && DURATION >= 1 && CLIENTS >= 1 && JOBS >= 1 && SCALE >= 1)) ||
    die "ROUNDS, DURATION, CLIENTS, JOBS and SCALE must be at least 1"
case "$SSLMODE" in disable | prefer | require | verify-ca | verify-full) ;;
*) die "SSLMODE must be disable, prefer, require, verify-ca or verify-full, got '$SSLMODE'" ;;
esac
ALL_WORKLOADS="select_simple select_prepared tpcb select_connect select1_latency"
for w in $WORKLOADS; do
    [[ " $ALL_WORKLOADS " == *" $w "* ]] || die "unknown workload '$w' in WORKLOADS (known: $ALL_WORKLOADS)"
done

# The caller's libpq settings must not change how we reach our own servers.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^PG' || true)

# ---------------------------------------------------------------- cleanup --

TMP=""
PG_PID=""
RG_PID=""
PGB_PID=""
IDLE_PID=""

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
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$IDLE_PID" TERM 10
    stop_pid "$RG_PID" TERM 10
    stop_pid "$PGB_PID" TERM 10
    # SIGINT: PostgreSQL's fast shutdown.
    stop_pid "$PG_PID" INT 20
    wait 2>/dev/null || true
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $KEEP_TMP == 1 ]] || ((rc != 0 && rc != 130)); then
            # Keep the logs after a failure (not after Ctrl-C): they say why.
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
    [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null ||
        die "$1 is missing; install it (Debian/Ubuntu: apt-get install $*)"
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

# Like src/cluster.rs: PATH (resolving symlinks), pg_config --bindir, then
# Debian's /usr/lib/postgresql/<version>/bin, newest first.
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
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x $d/initdb && -x $d/postgres ]] && { echo "$d"; return 0; }
    done
    return 1
}

command -v cargo >/dev/null || die "cargo not found; install Rust (https://rustup.rs)"
command -v python3 >/dev/null || apt_install python3
command -v openssl >/dev/null || apt_install openssl
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
PGB_VERSION=$("$PGBOUNCER" --version | head -1 | awk '{print $2}')
# 1.18 is the first release this script was written against (SCRAM both ways,
# client TLS settings as used below).
python3 - "$PGB_VERSION" <<'EOF' || die "PgBouncer $PGB_VERSION is too old; 1.18 or newer is needed"
import sys
v = tuple(int(x) for x in sys.argv[1].split(".")[:2])
sys.exit(0 if v >= (1, 18) else 1)
EOF

# Every login is a TCP connection; 1,000 idle sessions need ~2,000 descriptors
# in each proxy.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= 4096)) || warn "open-file limit is $(ulimit -n); the idle-session measurement may fail"

# ------------------------------------------------------------------ build --

log "building rolegate and the idle_sessions example (release)"
(cd "$ROOT" && cargo build --release --locked --bin rolegate) || die "cargo build --release failed"
(cd "$ROOT" && cargo build --release --locked --example idle_sessions) || die "cargo build --release --example idle_sessions failed"
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

TMP=$(mktemp -d /tmp/rolegate-bench.XXXXXX)
# The unprivileged server users must be able to reach their files in here.
chmod 755 "$TMP"
mkdir -p "$TMP/bin" "$TMP/tls" "$TMP/pgbouncer" "$TMP/pgsock"
# Copies: someone else's build in the shared target dir must not swap the
# binary under a running benchmark.
cp "$TARGET_DIR/release/rolegate" "$TMP/bin/rolegate"
cp "$TARGET_DIR/release/examples/idle_sessions" "$TMP/bin/idle_sessions"
RG_BIN=$TMP/bin/rolegate
IDLE_BIN=$TMP/bin/idle_sessions

# ------------------------------------------------------------ run-as user --

# PostgreSQL and PgBouncer refuse to run as root: run them as nobody.
RUN_AS=()
if [[ $(id -u) == 0 ]]; then
    id nobody >/dev/null 2>&1 || die "running as root and there is no 'nobody' user to run PostgreSQL and PgBouncer as"
    command -v setpriv >/dev/null || die "setpriv (util-linux) is needed to drop root privileges"
    RUN_AS=(setpriv --reuid="$(id -u nobody)" --regid="$(id -g nobody)" --clear-groups --)
    chown nobody:"$(id -gn nobody)" "$TMP/pgbouncer" "$TMP/pgsock"
fi
as_server() { (cd "$TMP" && HOME=$TMP "${RUN_AS[@]}" "$@"); }
give_to_server() { [[ ${#RUN_AS[@]} == 0 ]] || chown -R nobody:"$(id -gn nobody)" "$@"; }

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}
secret() { openssl rand -hex 16; }

# -------------------------------------------------------------------- TLS --

# One ECDSA P-256 server certificate (from a throwaway CA) for all three
# servers, so every target pays for the same kind of handshake.
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

PGDATA=$TMP/pgdata
log "initdb ($BINDIR)"
printf '%s\n' "$SU_PW" >"$TMP/pwfile"
mkdir -m 700 "$PGDATA"
give_to_server "$TMP/pwfile" "$PGDATA"
as_server "$BINDIR/initdb" -D "$PGDATA" --auth=scram-sha-256 -U postgres -E UTF8 --locale=C \
    --pwfile="$TMP/pwfile" >"$TMP/initdb.log" 2>&1 ||
    die "initdb failed; its output:\n$(cat "$TMP/initdb.log")"
rm -f "$TMP/pwfile"
cp "$TMP/tls/server.crt" "$PGDATA/server.crt"
cp "$TMP/tls/server.key" "$PGDATA/server.key"
chmod 600 "$PGDATA/server.key"
cat >"$PGDATA/pg_hba.conf" <<EOF
# Written by benches/pgbench.sh: SCRAM only, loopback only.
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
# 1,000 idle sessions through a proxy, the other proxy's pooled upstream
# connections, and the benchmark's own.
max_connections = 1300
shared_buffers = 128MB
# A throwaway cluster: keep it CPU-bound so disk noise does not swamp the
# proxies' overhead.
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
give_to_server "$PGDATA"

start_postgres() {
    local attempt i
    for attempt in 1 2 3 4 5; do
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
log "starting PostgreSQL"
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

# await_login pid port user password: 0 once a login + `select 1` works,
# 1 if the process died, 2 after 30 seconds of failed logins.
await_login() {
    local pid=$1 port=$2 user=$3 password=$4 deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if PGPASSWORD=$password PGSSLMODE=$SSLMODE PGSSLROOTCERT=$CA PGCONNECT_TIMEOUT=5 \
            "$PSQL" -X -q -A -t -h 127.0.0.1 -p "$port" -U "$user" -d "$DB" -c 'select 1' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null || return 1
    return 2
}

# --------------------------------------------------------------- rolegate --

RG_PORT=""
RG_ADMIN=""
RG_POOL_MAX_IDLE=100
start_rolegate() {
    local attempt verifier
    verifier=$(printf %s "$WEB_PW" | "$RG_BIN" scram-hash) || die "rolegate scram-hash failed"
    for attempt in 1 2 3 4 5; do
        RG_PORT=$(free_port)
        RG_ADMIN=$(free_port)
        cat >"$TMP/rolegate.toml" <<EOF
[listen]
address = "127.0.0.1:$RG_PORT"
[listen.tls]
mode = "allow"
cert_file = "$TMP/tls/server.crt"
key_file = "$TMP/tls/server.key"

[admin]
address = "127.0.0.1:$RG_ADMIN"

[upstream]
host = "127.0.0.1"
port = $PG_PORT
database = "$DB"
tls = "prefer"
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
# with DISCARD ALL and reused.
[pool]
enabled = true
max_idle = $RG_POOL_MAX_IDLE
EOF
        "$RG_BIN" check --config "$TMP/rolegate.toml" --offline >"$TMP/rolegate-check.log" 2>&1 ||
            die "rolegate check --offline rejected the generated config:\n$(cat "$TMP/rolegate-check.log")"
        : >"$TMP/rolegate.log"
        "$RG_BIN" serve --config "$TMP/rolegate.toml" >>"$TMP/rolegate.log" 2>&1 &
        RG_PID=$!
        local rc=0
        await_login "$RG_PID" "$RG_PORT" web "$WEB_PW" || rc=$?
        ((rc != 0)) || return 0
        if ((rc == 1)) && grep -q "cannot listen" "$TMP/rolegate.log"; then
            RG_PID=""
            continue # someone took the port first
        fi
        die "rolegate did not start or does not accept logins; its log:\n$(tail -20 "$TMP/rolegate.log")"
    done
    die "rolegate could not find a free port"
}
log "starting rolegate"
start_rolegate

# -------------------------------------------------------------- PgBouncer --

PGB_PORT=""
start_pgbouncer() {
    local attempt
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
        "$verifier" "$(printf %s "$ADMIN_PW" | "$RG_BIN" scram-hash)" >"$TMP/pgbouncer/userlist.txt"
    cp "$TMP/tls/server.crt" "$TMP/tls/server.key" "$TMP/pgbouncer/"
    for attempt in 1 2 3 4 5; do
        PGB_PORT=$(free_port)
        cat >"$TMP/pgbouncer/pgbouncer.ini" <<EOF
[databases]
$DB = host=127.0.0.1 port=$PG_PORT dbname=$DB user=$RUNTIME password=$RT_PW

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
pidfile = $TMP/pgbouncer/pgbouncer.pid
auth_type = scram-sha-256
auth_file = $TMP/pgbouncer/userlist.txt
admin_users = pgb_admin
pool_mode = session
server_reset_query = DISCARD ALL
max_client_conn = 3000
default_pool_size = 1100
max_db_connections = 0
client_tls_sslmode = allow
client_tls_cert_file = $TMP/pgbouncer/server.crt
client_tls_key_file = $TMP/pgbouncer/server.key
server_tls_sslmode = prefer
ignore_startup_parameters = extra_float_digits
EOF
        chmod 600 "$TMP/pgbouncer/server.key" "$TMP/pgbouncer/userlist.txt" "$TMP/pgbouncer/pgbouncer.ini"
        give_to_server "$TMP/pgbouncer"
        : >"$TMP/pgbouncer.log"
        (cd "$TMP" && HOME=$TMP exec "${RUN_AS[@]}" "$PGBOUNCER" "$TMP/pgbouncer/pgbouncer.ini") \
            >>"$TMP/pgbouncer.log" 2>&1 &
        PGB_PID=$!
        local rc=0
        await_login "$PGB_PID" "$PGB_PORT" web "$PGB_PW" || rc=$?
        ((rc != 0)) || return 0
        if ((rc == 1)) && grep -q -e "Address already in use" -e "bind" "$TMP/pgbouncer.log"; then
            PGB_PID=""
            continue
        fi
        die "PgBouncer did not start or does not accept logins; its log:\n$(tail -20 "$TMP/pgbouncer.log")"
    done
    die "PgBouncer could not find a free port"
}
log "starting PgBouncer $PGB_VERSION"
start_pgbouncer

# -------------------------------------------------------------- measuring --

target_port() {
    case $1 in direct) echo "$PG_PORT" ;; pgbouncer) echo "$PGB_PORT" ;; rolegate) echo "$RG_PORT" ;; esac
}
target_user() {
    case $1 in direct) echo "$RUNTIME" ;; *) echo web ;; esac
}
target_password() {
    case $1 in direct) echo "$RT_PW" ;; pgbouncer) echo "$PGB_PW" ;; rolegate) echo "$WEB_PW" ;; esac
}
target_pid() {
    case $1 in direct) echo "" ;; pgbouncer) echo "$PGB_PID" ;; rolegate) echo "$RG_PID" ;; esac
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# utime + stime in clock ticks (fields 14 and 15; the command name in field 2
# is cut off first in case it holds spaces).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
CLK_TCK=$(getconf CLK_TCK)

workload_args() {
    case $1 in
    select_simple) echo "-S -M simple" ;;
    select_prepared) echo "-S -M prepared" ;;
    tpcb) echo "" ;;
    select_connect) echo "-S -C" ;;
    select1_latency) echo "-f $HERE/select1.sql" ;;
    esac
}
# Statements per transaction: BEGIN, 3 UPDATEs, SELECT, INSERT, END for TPC-B.
workload_statements() {
    case $1 in tpcb) echo 7 ;; *) echo 1 ;; esac
}
workload_clients() {
    case $1 in select1_latency) echo "-c 1 -j 1" ;; *) echo "-c $CLIENTS -j $JOBS" ;; esac
}

META=$TMP/meta.tsv
RESULTS=$TMP/results.tsv
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }
: >"$META"
printf 'round\tworkload\ttarget\tposition\ttps\tlatency_ms\ttransactions\tfailed\tstatements\tcpu_ms\trss_before_kb\trss_after_kb\tconnection_ms\tstatus\terror\n' >"$RESULTS"

# run_pgbench target duration extra-args... -> output in $TMP/last-pgbench.out
run_pgbench() {
    local target=$1 duration=$2
    shift 2
    # -n everywhere: pgbench's VACUUM is refused on runtime sessions.
    PGHOST=127.0.0.1 PGPORT=$(target_port "$target") PGUSER=$(target_user "$target") \
        PGPASSWORD=$(target_password "$target") PGDATABASE=$DB PGSSLMODE=$SSLMODE \
        PGSSLROOTCERT=$CA PGCONNECT_TIMEOUT=30 \
        timeout --signal=INT $((duration * 3 + 120)) "$PGBENCH" -n -T "$duration" "$@" \
        >"$TMP/last-pgbench.out" 2>&1
}

field() { # regex-with-one-group file
    sed -n -E "s/$1/\\1/p" "$2" | head -1
}

one_run() { # round workload target position
    local round=$1 w=$2 target=$3 pos=$4 pid cpu0 cpu1 rss0="" rss1="" cpu_ms="" status=ok err=""
    local tps lat txns failed conn stmts
    pid=$(target_pid "$target")
    if [[ -n $pid ]]; then
        rss0=$(rss_kb "$pid")
        cpu0=$(cpu_ticks "$pid")
    fi
    # shellcheck disable=SC2046 # word splitting of the argument lists is intended
    if ! run_pgbench "$target" "$DURATION" $(workload_clients "$w") $(workload_args "$w"); then
        status=failed
        err=$(grep -m3 -i -e error -e fatal "$TMP/last-pgbench.out" | tr '\t\n' '  ' | cut -c1-300)
        warn "round $round $w on $target: pgbench failed: $err"
        cp "$TMP/last-pgbench.out" "$TMP/failed-$round-$w-$target.out"
    fi
    if [[ -n $pid ]]; then
        kill -0 "$pid" 2>/dev/null || die "$target (pid $pid) died during round $round $w; see $TMP"
        cpu1=$(cpu_ticks "$pid")
        rss1=$(rss_kb "$pid")
        cpu_ms=$(((cpu1 - cpu0) * 1000 / CLK_TCK))
    fi
    tps=$(field '^tps = ([0-9.]+).*' "$TMP/last-pgbench.out")
    lat=$(field '^latency average = ([0-9.]+) ms.*' "$TMP/last-pgbench.out")
    txns=$(field '^number of transactions actually processed: ([0-9]+).*' "$TMP/last-pgbench.out")
    failed=$(field '^number of failed transactions: ([0-9]+).*' "$TMP/last-pgbench.out")
    conn=$(field '^average connection time = ([0-9.]+) ms.*' "$TMP/last-pgbench.out")
    stmts=$((${txns:-0} * $(workload_statements "$w")))
    if [[ $status == ok && (-z $tps || -z $txns) ]]; then
        status=failed
        err="could not read pgbench's output"
        cp "$TMP/last-pgbench.out" "$TMP/failed-$round-$w-$target.out"
    fi
    if [[ $status == ok && ${failed:-0} != 0 ]]; then
        warn "round $round $w on $target: $failed failed transactions"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$w" "$target" "$pos" \
        "$tps" "$lat" "$txns" "$failed" "$stmts" "$cpu_ms" "$rss0" "$rss1" "$conn" "$status" "$err" >>"$RESULTS"
    printf '    %-16s %-10s tps %-12s latency %-8s ms' "$w" "$target" "${tps:-n/a}" "${lat:-n/a}" >&2
    [[ -n $cpu_ms && $stmts -gt 0 ]] && printf '   cpu %s ms' "$cpu_ms" >&2
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

idle_measure() { # target
    local target=$1 pid port url i n rss0 rss1 rss2
    pid=$(target_pid "$target")
    port=$(target_port "$target")
    url="postgres://web:$(target_password "$target")@127.0.0.1:$port/$DB?sslmode=$SSLMODE"
    rss0=$(rss_kb "$pid")
    : >"$TMP/idle-$target.out"
    PGSSLROOTCERT=$CA "$IDLE_BIN" "$url" "$IDLE_SESSIONS" >"$TMP/idle-$target.out" 2>"$TMP/idle-$target.err" &
    IDLE_PID=$!
    for ((i = 0; i < 6000; i++)); do
        grep -q '^READY' "$TMP/idle-$target.out" && break
        kill -0 "$IDLE_PID" 2>/dev/null ||
            die "idle_sessions against $target failed:\n$(tail -5 "$TMP/idle-$target.err")"
        sleep 0.1
    done
    grep -q '^READY' "$TMP/idle-$target.out" || die "idle_sessions against $target did not finish logging in within 10 minutes"
    n=$(upstream_sessions)
    rss1=$(rss_kb "$pid")
    stop_pid "$IDLE_PID" TERM 30
    wait "$IDLE_PID" 2>/dev/null || true
    IDLE_PID=""
    if [[ $target == pgbouncer ]]; then
        # Session mode keeps released server connections pooled; close them so
        # they do not count against max_connections later.
        PGPASSWORD=$ADMIN_PW PGSSLMODE=$SSLMODE PGSSLROOTCERT=$CA "$PSQL" -X -q -h 127.0.0.1 -p "$PGB_PORT" \
            -U pgb_admin -d pgbouncer -c "RECONNECT $DB" >/dev/null 2>&1 || warn "PgBouncer RECONNECT failed"
    fi
    # rolegate's [pool] keeps up to max_idle (default 100) released upstream
    # connections for reuse; everything beyond that must close.
    local keep=20
    [[ $target != rolegate ]] || keep=$((RG_POOL_MAX_IDLE + 20))
    wait_upstream_below "$keep" 120 || warn "upstream sessions of $target did not close within 2 minutes"
    rss2=$(rss_kb "$pid")
    meta "idle_sessions.$target.sessions" "$IDLE_SESSIONS"
    meta "idle_sessions.$target.upstream_sessions_open" "$n"
    meta "idle_sessions.$target.rss_0_sessions_kb" "$rss0"
    meta "idle_sessions.$target.rss_with_sessions_kb" "$rss1"
    meta "idle_sessions.$target.rss_after_close_kb" "$rss2"
    printf '    %-10s RSS %s KiB -> %s KiB with %s idle sessions (%s upstream) -> %s KiB after closing\n' \
        "$target" "$rss0" "$rss1" "$IDLE_SESSIONS" "$n" "$rss2" >&2
}

# ------------------------------------------------------------- the facts --

meta parameters.rounds "$ROUNDS"
meta parameters.duration_s "$DURATION"
meta parameters.clients "$CLIENTS"
meta parameters.jobs "$JOBS"
meta parameters.scale "$SCALE"
meta parameters.sslmode "$SSLMODE"
meta parameters.warmup_s "$WARMUP"
meta parameters.idle_sessions "$IDLE_SESSIONS"
meta parameters.workloads "$WORKLOADS"
meta parameters.rolegate_policy_mode enforce
meta parameters.rolegate_upstream_tls prefer
meta parameters.rolegate_pool "enabled, max_idle $RG_POOL_MAX_IDLE"
meta parameters.pgbouncer_pool_mode session
meta parameters.pgbouncer_server_tls_sslmode prefer
meta parameters.pgbouncer_server_reset_query "DISCARD ALL"
meta parameters.tls_certificate "ECDSA P-256"
meta parameters.postgresql_settings "fsync=off synchronous_commit=off full_page_writes=off shared_buffers=128MB max_connections=1300"
meta machine.nproc "$(nproc)"
meta machine.cpu_model "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
meta machine.kernel "$(uname -sr)"
meta machine.memory_kb "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
meta machine.loadavg_at_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta versions.postgresql "$("$BINDIR/postgres" --version | sed 's/^postgres (PostgreSQL) //')"
meta versions.pgbench "$("$PGBENCH" --version | sed 's/^pgbench (PostgreSQL) //')"
meta versions.pgbouncer "$PGB_VERSION"
rev=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
[[ -z $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] || rev="$rev+dirty"
meta versions.rolegate "$rev"
meta versions.rustc "$(rustc --version 2>/dev/null || echo unknown)"
for w in $ALL_WORKLOADS; do
    args="-n -T $DURATION $(workload_clients "$w") $(workload_args "$w" | sed "s|$HERE/||")"
    meta "workloads.$w.pgbench_args" "${args% }"
    meta "workloads.$w.statements_per_transaction" "$(workload_statements "$w")"
done

# Upstream TLS sanity check: every path should reach the server the same way.
for target in direct pgbouncer rolegate; do
    ssl=$(PGPASSWORD=$(target_password "$target") PGSSLMODE=$SSLMODE PGSSLROOTCERT=$CA "$PSQL" -X -A -t \
        -h 127.0.0.1 -p "$(target_port "$target")" -U "$(target_user "$target")" -d "$DB" \
        -c "select ssl from pg_stat_ssl where pid = pg_backend_pid()") || die "cannot query through $target"
    meta "upstream_tls.$target" "$ssl"
done

meta rss.rolegate.start_kb "$(rss_kb "$RG_PID")"
meta rss.pgbouncer.start_kb "$(rss_kb "$PGB_PID")"

if ((IDLE_SESSIONS > 0)); then
    log "idle sessions: $IDLE_SESSIONS through each proxy"
    # rolegate first: it closes its upstream connections with the sessions.
    idle_measure rolegate
    idle_measure pgbouncer
fi

meta rss.rolegate.before_runs_kb "$(rss_kb "$RG_PID")"
meta rss.pgbouncer.before_runs_kb "$(rss_kb "$PGB_PID")"

TARGETS=(direct pgbouncer rolegate)
if ((WARMUP > 0)); then
    log "warm-up: ${WARMUP}s of pgbench -S per target (not recorded)"
    for target in "${TARGETS[@]}"; do
        run_pgbench "$target" "$WARMUP" -S -c "$CLIENTS" -j "$JOBS" ||
            die "warm-up against $target failed:\n$(tail -5 "$TMP/last-pgbench.out")"
    done
fi

log "benchmark: $ROUNDS rounds x workloads [$WORKLOADS] x 3 targets, ${DURATION}s each, sslmode=$SSLMODE"
for ((round = 1; round <= ROUNDS; round++)); do
    order=()
    for ((k = 0; k < 3; k++)); do order+=("${TARGETS[$(((round - 1 + k) % 3))]}"); done
    log "round $round/$ROUNDS, order: ${order[*]}"
    for w in $WORKLOADS; do
        pos=0
        for target in "${order[@]}"; do
            pos=$((pos + 1))
            one_run "$round" "$w" "$target" "$pos"
        done
    done
done

meta rss.rolegate.after_runs_kb "$(rss_kb "$RG_PID")"
meta rss.rolegate.peak_kb "$(hwm_kb "$RG_PID")"
meta rss.pgbouncer.after_runs_kb "$(rss_kb "$PGB_PID")"
meta rss.pgbouncer.peak_kb "$(hwm_kb "$PGB_PID")"
meta machine.loadavg_at_end "$(cut -d' ' -f1-3 /proc/loadavg)"
meta rolegate_log_lines "$(wc -l <"$TMP/rolegate.log")"

mkdir -p "$(dirname "$OUT")"
python3 "$HERE/report.py" --results "$RESULTS" --meta "$META" --out "$OUT" ||
    die "report.py failed; raw results are in $RESULTS"
log "wrote $OUT"
