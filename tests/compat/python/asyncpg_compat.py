"""asyncpg through rolegate: run by tests/compat.rs (`cargo test --test compat`).

asyncpg speaks only the extended protocol with binary formats. Connection
parameters come from ROLEGATE_* environment variables; prints one line per
check and exits non-zero if any check failed.
"""

import asyncio
import datetime
import decimal
import io
import os
import ssl
import sys
import traceback
import uuid

import asyncpg

ENV = os.environ
TABLE = ENV["ROLEGATE_TABLE"]
FAILED = []


def tls_context(ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def connect(ca=None, **kw):
    return await asyncpg.connect(
        host=ENV["ROLEGATE_HOST"],
        port=int(ENV["ROLEGATE_PORT"]),
        user=ENV["ROLEGATE_USER"],
        password=ENV["ROLEGATE_PASSWORD"],
        database=ENV["ROLEGATE_DB"],
        ssl=tls_context(ca or ENV["ROLEGATE_CA"]),
        timeout=30,
        **kw,
    )


async def check(name, coro_fn):
    try:
        await coro_fn()
        print(f"ok   {name}", flush=True)
    except Exception as e:  # noqa: BLE001 - report every failure by name
        FAILED.append(name)
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        traceback.print_exc(file=sys.stdout)


async def expect_sqlstate(exc_type, state, coro):
    try:
        await coro
    except exc_type as e:
        assert e.sqlstate == state, f"expected SQLSTATE {state}, got {e.sqlstate}: {e}"
        return e
    raise AssertionError(f"expected {exc_type.__name__} ({state}), nothing was raised")


async def main():
    conn = await connect(server_settings={"application_name": "compat-asyncpg"})
    t = TABLE

    async def connected():
        assert conn.get_server_pid() != 0
        assert conn._transport.get_extra_info("ssl_object") is not None, "not TLS"
        assert await conn.fetchval("select current_user") == ENV["ROLEGATE_RUNTIME_ROLE"]
        assert await conn.fetchval("show application_name") == "compat-asyncpg"

    await check("connect: SCRAM over TLS (CA and host name verified) as the runtime role", connected)

    async def wrong_ca():
        try:
            c = await connect(ca=ENV["ROLEGATE_WRONG_CA"])
        except (ssl.SSLError, OSError):
            return
        await c.close()
        raise AssertionError("connected although the certificate is from another CA")

    await check("TLS: a certificate from another CA is rejected", wrong_ca)

    async def crud():
        await conn.execute(f"insert into {t} (id, v, b) values ($1, $2, $3)", 1, "one", b"\x00\x01\xff")
        await conn.executemany(f"insert into {t} (id, v) values ($1, $2)", [(2, "two"), (3, "three")])
        status = await conn.execute(f"update {t} set v = $1 where id = $2", "uno", 1)
        assert status == "UPDATE 1", status
        rows = await conn.fetch(f"select id, v, b from {t} order by id")
        assert [tuple(r) for r in rows] == [(1, "uno", b"\x00\x01\xff"), (2, "two", None), (3, "three", None)], rows
        status = await conn.execute(f"delete from {t} where id >= $1", 2)
        assert status == "DELETE 2", status

    await check("CRUD with bound parameters, executemany", crud)

    async def binary_types():
        u = uuid.uuid4()
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        row = await conn.fetchrow(
            "select $1::uuid, $2::timestamptz, $3::numeric, $4::int8[], $5::jsonb, $6::float8",
            u,
            now,
            decimal.Decimal("12345.678"),
            [1, 2, None],
            '{"a": [1, 2]}',
            1.5,
        )
        assert tuple(row) == (u, now, decimal.Decimal("12345.678"), [1, 2, None], '{"a": [1, 2]}', 1.5), row

    await check("binary formats: uuid, timestamptz, numeric, arrays, jsonb, float8", binary_types)

    async def introspection():
        # A composite row type is not among asyncpg's built-in codecs, so it
        # runs its type introspection query first.
        await conn.execute("select set_config('app.tenant', 'acme', false)")
        rows = await conn.fetch("select n from notes n order by id")
        assert rows and all(r["n"]["tenant"] == "acme" for r in rows), rows
        await conn.execute("reset app.tenant")

    await check("row level security and type introspection (composite row type)", introspection)

    async def prepared():
        stmt = await conn.prepare(f"select v from {t} where id = $1")
        for _ in range(3):
            assert await stmt.fetchval(1) == "uno"
        assert [a.name for a in stmt.get_attributes()] == ["v"]
        assert [p.name for p in stmt.get_parameters()] == ["int4"]
        n = await conn.fetchval("select count(*) from pg_prepared_statements where not from_sql")
        assert n >= 1, n

    await check("prepared statements (conn.prepare, reused)", prepared)

    async def transactions():
        async with conn.transaction():
            await conn.execute(f"insert into {t} (id, v) values (10, 'committed')")
        try:
            async with conn.transaction():
                await conn.execute(f"insert into {t} (id, v) values (11, 'rolled back')")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        async with conn.transaction():
            await conn.execute(f"insert into {t} (id, v) values (12, 'outer')")
            try:
                async with conn.transaction():  # a SAVEPOINT
                    await conn.execute(f"update {t} set v = 'lost' where id = 12")
                    raise RuntimeError("roll back to savepoint")
            except RuntimeError:
                pass
        rows = await conn.fetch(f"select id, v from {t} where id >= 10 order by id")
        assert [tuple(r) for r in rows] == [(10, "committed"), (12, "outer")], rows

    await check("transaction commit, rollback, savepoint", transactions)

    async def large():
        rows = await conn.fetch("select g, md5(g::text) from generate_series(1, 100000) g")
        assert len(rows) == 100000 and rows[-1][0] == 100000
        total = 0
        async with conn.transaction():
            # A portal read in batches (Execute with a row limit).
            async for r in conn.cursor("select g from generate_series(1, 100000) g", prefetch=5000):
                total += r[0]
        assert total == 100000 * 100001 // 2, total

    await check("large result: 100k rows (fetch and portal cursor)", large)

    async def copy():
        records = [(i, f"rec {i}", bytes([i % 256, 0])) for i in range(100, 1100)]
        await conn.copy_records_to_table(t, records=records, columns=["id", "v", "b"])
        out = io.BytesIO()
        await conn.copy_from_query(f"select id, v from {t} where id >= 100 and id < 1100 order by id", output=out)
        lines = out.getvalue().decode().splitlines()
        assert len(lines) == 1000 and lines[0] == "100\trec 100", lines[:2]
        binary = io.BytesIO()
        await conn.copy_from_query(f"select id, v, b from {t} where id >= 100", output=binary, format="binary")
        assert binary.getvalue().startswith(b"PGCOPY\n\xff\r\n\x00")
        await conn.execute(f"delete from {t} where id >= 100")
        binary.seek(0)
        status = await conn.copy_to_table(t, source=binary, columns=["id", "v", "b"], format="binary")
        assert status.startswith("COPY"), status
        n = await conn.fetchval(f"select count(*) from {t} where id >= 100")
        assert n == 1000, n

    await check("COPY: copy_records_to_table (binary), copy_from_query, binary copy_from_query / copy_to_table", copy)

    async def refused():
        e = await expect_sqlstate(
            asyncpg.exceptions.InsufficientPrivilegeError, "42501", conn.execute("create table compat_x (i int)")
        )
        assert "rolegate" in str(e), str(e)
        assert await conn.fetchval("select 1") == 1
        await expect_sqlstate(
            asyncpg.exceptions.InsufficientPrivilegeError, "42501", conn.prepare(f"drop table {t}")
        )
        await expect_sqlstate(
            asyncpg.exceptions.InsufficientPrivilegeError, "42501", conn.fetch(f"drop table {t}")
        )
        assert await conn.fetchval(f"select count(*) from {t}") > 0

    await check("refused DDL: 42501 InsufficientPrivilegeError (simple and extended), connection usable", refused)

    async def refused_in_tx():
        try:
            async with conn.transaction():
                await conn.execute(f"insert into {t} (id, v) values (50, 'tx')")
                await conn.execute("alter table notes add column x int")
        except asyncpg.exceptions.InsufficientPrivilegeError as e:
            assert e.sqlstate == "42501"
        else:
            raise AssertionError("DDL in a transaction was not refused")
        assert await conn.fetchval(f"select count(*) from {t} where id = 50") == 0
        assert not conn.is_in_transaction()

    await check("refused DDL inside a transaction rolls it back, connection usable", refused_in_tx)

    async def cancel():
        # Cancelling the task makes asyncpg send a CancelRequest (over TLS,
        # like the connection) and wait for the server's answer. It swallows
        # the 57014, but the cancelled statement aborts the transaction: a
        # sleep that ran to its end would not.
        sleep = "select pg_sleep(30) /* compat cancel target */"
        watcher = await connect()
        try:
            tr = conn.transaction()
            await tr.start()
            task = asyncio.ensure_future(conn.fetch(sleep))
            # A cancel that arrives before the query runs is ignored by the
            # server, so wait until it is running rather than a fixed delay.
            for _ in range(1200):
                n = await watcher.fetchval(
                    "select count(*) from pg_stat_activity where state = 'active' and query = $1", sleep
                )
                if n:
                    break
                await asyncio.sleep(0.05)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("the fetch was not cancelled")
            await expect_sqlstate(
                asyncpg.exceptions.InFailedSQLTransactionError, "25P02", conn.fetchval("select 1")
            )
            await tr.rollback()
        finally:
            await watcher.close()
        assert await conn.fetchval("select 2") == 2

    await check("cancel: a cancelled fetch sends a CancelRequest that stops pg_sleep(30), connection usable", cancel)

    async def statement_timeout():
        c2 = await connect(server_settings={"statement_timeout": "500"})
        try:
            await expect_sqlstate(
                asyncpg.exceptions.QueryCanceledError, "57014", c2.fetch("select pg_sleep(30)")
            )
            assert await c2.fetchval("select 3") == 3
        finally:
            await c2.close()

    await check("statement_timeout (startup parameter): 57014, connection usable", statement_timeout)

    await conn.close()
    print(f"asyncpg {asyncpg.__version__}")


asyncio.run(main())
if FAILED:
    print(f"{len(FAILED)} check(s) failed: {', '.join(FAILED)}")
    sys.exit(1)
