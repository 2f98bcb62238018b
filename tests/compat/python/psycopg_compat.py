"""psycopg 3 through rolegate: run by tests/compat.rs (`cargo test --test compat`).

Connection parameters come from ROLEGATE_* environment variables; prints one
line per check and exits non-zero if any check failed.
"""

import os
import sys
import threading
import time
import traceback

import psycopg
from psycopg import errors, sql

ENV = os.environ
TABLE = ENV["ROLEGATE_TABLE"]
FAILED = []


def connect(**kw):
    return psycopg.connect(
        host=ENV["ROLEGATE_HOST"],
        port=ENV["ROLEGATE_PORT"],
        user=ENV["ROLEGATE_USER"],
        password=ENV["ROLEGATE_PASSWORD"],
        dbname=ENV["ROLEGATE_DB"],
        sslmode="verify-full",
        sslrootcert=ENV["ROLEGATE_CA"],
        connect_timeout=30,
        **kw,
    )


def check(name):
    def run(fn):
        try:
            fn()
            print(f"ok   {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure by name
            FAILED.append(name)
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stdout)
        return fn

    return run


def expect_sqlstate(exc_type, state, fn):
    try:
        fn()
    except exc_type as e:
        assert e.sqlstate == state, f"expected SQLSTATE {state}, got {e.sqlstate}: {e}"
        return e
    raise AssertionError(f"expected {exc_type.__name__} ({state}), nothing was raised")


conn = connect(autocommit=True)
t = sql.Identifier(TABLE)


@check("connect: SCRAM over TLS verify-full as the runtime role")
def _():
    assert conn.pgconn.ssl_in_use, "connection is not TLS"
    who = conn.execute("select current_user").fetchone()[0]
    assert who == ENV["ROLEGATE_RUNTIME_ROLE"], who


@check("TLS: a certificate from another CA is rejected")
def _():
    try:
        psycopg.connect(
            host=ENV["ROLEGATE_HOST"],
            port=ENV["ROLEGATE_PORT"],
            user=ENV["ROLEGATE_USER"],
            password=ENV["ROLEGATE_PASSWORD"],
            dbname=ENV["ROLEGATE_DB"],
            sslmode="verify-full",
            sslrootcert=ENV["ROLEGATE_WRONG_CA"],
            connect_timeout=30,
        ).close()
    except psycopg.OperationalError as e:
        assert "certificate verify failed" in str(e), str(e)
        return
    raise AssertionError("connected although the certificate is from another CA")


@check("CRUD with bound parameters (text and bytea)")
def _():
    conn.execute(sql.SQL("insert into {} (id, v, b) values (%s, %s, %s)").format(t), (1, "one", b"\x00\x01\xff"))
    conn.execute(sql.SQL("insert into {} (id, v) values (%s, %s), (%s, %s)").format(t), (2, "two", 3, "three"))
    n = conn.execute(sql.SQL("update {} set v = %s where id = %s").format(t), ("uno", 1)).rowcount
    assert n == 1, n
    rows = conn.execute(sql.SQL("select id, v, b from {} order by id").format(t)).fetchall()
    assert rows == [(1, "uno", b"\x00\x01\xff"), (2, "two", None), (3, "three", None)], rows
    n = conn.execute(sql.SQL("delete from {} where id >= %s").format(t), (2,)).rowcount
    assert n == 2, n


@check("binary result format")
def _():
    cur = conn.cursor(binary=True)
    row = cur.execute(sql.SQL("select id, v, b, 1.5::numeric from {} where id = %s").format(t), (1,)).fetchone()
    assert row[:3] == (1, "uno", b"\x00\x01\xff") and str(row[3]) == "1.5", row


@check("row level security: SET app.tenant")
def _():
    conn.execute("set app.tenant = 'acme'")
    tenants = {r[0] for r in conn.execute("select tenant from notes")}
    assert tenants == {"acme"}, tenants
    conn.execute("reset app.tenant")
    assert conn.execute("select count(*) from notes").fetchone()[0] == 0


@check("prepared statements (prepare=True, reused)")
def _():
    q = sql.SQL("select v from {} where id = %s").format(t)
    for _ in range(3):
        assert conn.execute(q, (1,), prepare=True).fetchone() == ("uno",)
    # psycopg names its server-side statements _pg3_N.
    n = conn.execute("select count(*) from pg_prepared_statements where name like '_pg3_%%'").fetchone()[0]
    assert n >= 1, "statement was not prepared server-side"


@check("SQL-level PREPARE / EXECUTE / DEALLOCATE")
def _():
    conn.execute("prepare compat_p(int) as select $1 * 2")
    assert conn.execute("execute compat_p(21)").fetchone() == (42,)
    conn.execute("deallocate compat_p")


@check("transaction commit and rollback")
def _():
    with conn.transaction():
        conn.execute(sql.SQL("insert into {} (id, v) values (10, 'committed')").format(t))
    try:
        with conn.transaction():
            conn.execute(sql.SQL("insert into {} (id, v) values (11, 'rolled back')").format(t))
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    with conn.transaction():
        conn.execute(sql.SQL("insert into {} (id, v) values (12, 'savepoint')").format(t))
        with conn.transaction():  # a SAVEPOINT
            conn.execute(sql.SQL("update {} set v = 'lost' where id = 12").format(t))
            raise psycopg.Rollback()
    rows = conn.execute(sql.SQL("select id, v from {} where id >= 10 order by id").format(t)).fetchall()
    assert rows == [(10, "committed"), (12, "savepoint")], rows


@check("large result: 100k rows (client-side and server-side cursor)")
def _():
    rows = conn.execute("select g, md5(g::text) from generate_series(1, 100000) g").fetchall()
    assert len(rows) == 100000 and rows[-1][0] == 100000
    with conn.transaction():
        with conn.cursor(name="compat_big") as cur:  # DECLARE + FETCH
            cur.itersize = 5000
            cur.execute("select g from generate_series(1, 100000) g")
            total = sum(r[0] for r in cur)
    assert total == 100000 * 100001 // 2, total


@check("pipeline mode")
def _():
    with conn.pipeline():
        curs = []
        for i in range(20, 30):
            conn.execute(sql.SQL("insert into {} (id, v) values (%s, %s)").format(t), (i, f"p{i}"))
        for i in range(20, 30):
            c = conn.cursor()
            c.execute(sql.SQL("select v from {} where id = %s").format(t), (i,))
            curs.append(c)
    assert [c.fetchone()[0] for c in curs] == [f"p{i}" for i in range(20, 30)]


@check("pipeline mode: refused DDL inside the pipeline is 42501, later statements are skipped, connection usable")
def _():
    def pipeline():
        with conn.pipeline() as p:
            conn.execute(sql.SQL("insert into {} (id, v) values (40, 'before')").format(t))
            conn.execute("create table compat_refused_in_pipeline (i int)")
            conn.execute(sql.SQL("insert into {} (id, v) values (41, 'after')").format(t))
            p.sync()

    expect_sqlstate(errors.InsufficientPrivilege, "42501", pipeline)
    rows = conn.execute(sql.SQL("select id from {} where id in (40, 41) order by id").format(t)).fetchall()
    # Everything up to the Sync is one implicit transaction: the error rolls
    # back the insert before it and PostgreSQL skips the one after it.
    assert rows == [], rows
    assert conn.execute("select 1").fetchone() == (1,)


@check("COPY FROM STDIN / TO STDOUT, text")
def _():
    with conn.cursor() as cur:
        with cur.copy(sql.SQL("copy {} (id, v) from stdin").format(t)) as cp:
            for i in range(100, 1100):
                cp.write_row((i, f"text {i}"))
        out = bytearray()
        with cur.copy(sql.SQL("copy (select id, v from {} where id >= 100 and id < 1100 order by id) to stdout").format(t)) as cp:
            for chunk in cp:
                out += chunk
    lines = out.decode().splitlines()
    assert len(lines) == 1000 and lines[0] == "100\ttext 100", lines[:2]


@check("COPY FROM STDIN / TO STDOUT, binary")
def _():
    with conn.cursor() as cur:
        with cur.copy(sql.SQL("copy {} (id, v, b) from stdin (format binary)").format(t)) as cp:
            cp.set_types(["int4", "text", "bytea"])
            for i in range(2000, 3000):
                cp.write_row((i, f"bin {i}", bytes([i % 256, 0, 255])))
        with cur.copy(sql.SQL("copy (select id, v, b from {} where id >= 2000 and id < 3000 order by id) to stdout (format binary)").format(t)) as cp:
            cp.set_types(["int4", "text", "bytea"])
            rows = list(cp.rows())
    assert len(rows) == 1000 and rows[0] == (2000, "bin 2000", bytes([2000 % 256, 0, 255])), rows[:2]


@check("refused DDL: 42501 InsufficientPrivilege, connection still usable")
def _():
    e = expect_sqlstate(errors.InsufficientPrivilege, "42501", lambda: conn.execute("create table compat_x (i int)"))
    assert e.diag.message_primary.startswith("rolegate:"), e.diag.message_primary
    assert conn.execute("select 1").fetchone() == (1,)
    expect_sqlstate(errors.InsufficientPrivilege, "42501", lambda: conn.execute(sql.SQL("drop table {}").format(t)))
    assert conn.execute(sql.SQL("select count(*) from {}").format(t)).fetchone()[0] > 0


@check("refused DDL inside a transaction (non-autocommit connection), rollback, connection usable")
def _():
    with connect() as c2:
        c2.execute(sql.SQL("insert into {} (id, v) values (50, 'tx')").format(t))
        expect_sqlstate(errors.InsufficientPrivilege, "42501", lambda: c2.execute("alter table notes add column x int"))
        c2.rollback()
        assert c2.execute(sql.SQL("select count(*) from {} where id = 50").format(t)).fetchone() == (0,)
        c2.rollback()


SLEEP = "select pg_sleep(30) /* compat cancel target */"


def cancel_when_running(cancel, failures):
    """Cancel once the sleep is running on the server (a cancel that arrives
    before the query starts is ignored by PostgreSQL, so no fixed delay).
    The cancel call itself must succeed: libpq reports a connection the
    proxy drops without a TLS close_notify as an error."""
    try:
        with connect(autocommit=True) as watcher:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                n = watcher.execute(
                    "select count(*) from pg_stat_activity where state = 'active' and query = %s", (SLEEP,)
                ).fetchone()[0]
                if n:
                    cancel()
                    return
                time.sleep(0.05)
    except Exception as exc:  # reported by the main thread
        failures.append(exc)


def cancelled_sleep(cancel):
    failures = []
    watcher = threading.Thread(target=cancel_when_running, args=(cancel, failures))
    watcher.start()
    try:
        # Without the cancel the sleep would end normally, with no error.
        expect_sqlstate(errors.QueryCanceled, "57014", lambda: conn.execute(SLEEP))
    finally:
        watcher.join()
    if failures:
        raise AssertionError("the cancel call failed: %r" % failures[0])


@check("cancel: cancel_safe() (libpq 17+ cancel API, over TLS) stops pg_sleep(30) with 57014, connection usable")
def _():
    cancelled_sleep(conn.cancel_safe)
    assert conn.execute("select 2").fetchone() == (2,)


@check("cancel: legacy cancel() (PQcancel, plaintext) stops pg_sleep(30) with 57014, connection usable")
def _():
    cancelled_sleep(conn.cancel)
    assert conn.execute("select 3").fetchone() == (3,)


@check("statement_timeout: 57014, connection usable")
def _():
    conn.execute("set statement_timeout = '500ms'")
    try:
        expect_sqlstate(errors.QueryCanceled, "57014", lambda: conn.execute("select pg_sleep(30)"))
    finally:
        conn.execute("reset statement_timeout")
    assert conn.execute("select 4").fetchone() == (4,)


conn.close()
print(f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}, {psycopg.pq.__impl__})")
if FAILED:
    print(f"{len(FAILED)} check(s) failed: {', '.join(FAILED)}")
    sys.exit(1)
