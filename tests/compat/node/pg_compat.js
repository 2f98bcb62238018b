// node-postgres (pg) through rolegate: run by tests/compat.rs
// (`cargo test --test compat`). Connection parameters come from ROLEGATE_*
// environment variables; prints one line per check and exits non-zero if
// any check failed.
'use strict'

const fs = require('fs')
const { pipeline } = require('stream/promises')
const { Readable, Writable } = require('stream')
const pg = require('pg')
const { from: copyFrom, to: copyTo } = require('pg-copy-streams')

const ENV = process.env
const T = ENV.ROLEGATE_TABLE
const failed = []

function config(extra = {}) {
  return {
    host: ENV.ROLEGATE_HOST,
    port: Number(ENV.ROLEGATE_PORT),
    user: ENV.ROLEGATE_USER,
    password: ENV.ROLEGATE_PASSWORD,
    database: ENV.ROLEGATE_DB,
    // Node checks the chain against this CA and the IP address against the
    // certificate's subjectAltName.
    ssl: { ca: fs.readFileSync(extra.ca || ENV.ROLEGATE_CA), rejectUnauthorized: true },
    connectionTimeoutMillis: 30000,
    ...extra,
  }
}

async function check(name, fn) {
  try {
    await fn()
    console.log(`ok   ${name}`)
  } catch (e) {
    failed.push(name)
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`)
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`)
}

async function expectCode(code, promise) {
  try {
    await promise
  } catch (e) {
    assert(e.code === code, `expected SQLSTATE ${code}, got ${e.code}: ${e.message}`)
    return e
  }
  throw new Error(`expected an error with SQLSTATE ${code}, nothing was raised`)
}

async function main() {
  const client = new pg.Client(config())
  await client.connect()

  await check('connect: SCRAM over TLS (CA and address verified) as the runtime role', async () => {
    assert(client.connection.stream.encrypted === true, 'connection is not TLS')
    const r = await client.query('select current_user')
    assert(r.rows[0].current_user === ENV.ROLEGATE_RUNTIME_ROLE, r.rows[0].current_user)
  })

  await check('TLS: a certificate from another CA is rejected', async () => {
    const c = new pg.Client(config({ ca: ENV.ROLEGATE_WRONG_CA }))
    let err = null
    try {
      await c.connect()
    } catch (e) {
      err = e
    }
    await c.end().catch(() => {})
    assert(err !== null, 'connected although the certificate is from another CA')
  })

  await check('CRUD with bound parameters (text and bytea)', async () => {
    await client.query(`insert into ${T} (id, v, b) values ($1, $2, $3)`, [1, 'one', Buffer.from([0, 1, 255])])
    await client.query(`insert into ${T} (id, v) values ($1, $2), ($3, $4)`, [2, 'two', 3, 'three'])
    let r = await client.query(`update ${T} set v = $1 where id = $2`, ['uno', 1])
    assert(r.rowCount === 1, r.rowCount)
    r = await client.query(`select id, v, b from ${T} order by id`)
    assert(
      JSON.stringify(r.rows.map((x) => [x.id, x.v, x.b && [...x.b]])) ===
        JSON.stringify([[1, 'uno', [0, 1, 255]], [2, 'two', null], [3, 'three', null]]),
      JSON.stringify(r.rows),
    )
    r = await client.query(`delete from ${T} where id >= $1`, [2])
    assert(r.rowCount === 2, r.rowCount)
  })

  await check('row level security: set_config(app.tenant) as a parameter', async () => {
    await client.query("select set_config('app.tenant', $1, false)", ['acme'])
    const r = await client.query('select distinct tenant from notes')
    assert(r.rows.length === 1 && r.rows[0].tenant === 'acme', JSON.stringify(r.rows))
    await client.query('reset app.tenant')
  })

  await check('named prepared statement, reused; rowMode array', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await client.query({ name: 'compat_get', text: `select v from ${T} where id = $1`, values: [1], rowMode: 'array' })
      assert(r.rows[0][0] === 'uno', JSON.stringify(r.rows))
    }
    const r = await client.query("select count(*)::int as n from pg_prepared_statements where name = 'compat_get'")
    assert(r.rows[0].n === 1, 'statement was not prepared server-side')
  })

  await check('transaction commit, rollback, savepoint', async () => {
    await client.query('begin')
    await client.query(`insert into ${T} (id, v) values (10, 'committed')`)
    await client.query('commit')
    await client.query('begin')
    await client.query(`insert into ${T} (id, v) values (11, 'rolled back')`)
    await client.query('rollback')
    await client.query('begin')
    await client.query(`insert into ${T} (id, v) values (12, 'outer')`)
    await client.query('savepoint s')
    await client.query(`update ${T} set v = 'lost' where id = 12`)
    await client.query('rollback to savepoint s')
    await client.query('commit')
    const r = await client.query(`select id, v from ${T} where id >= 10 order by id`)
    assert(JSON.stringify(r.rows) === JSON.stringify([{ id: 10, v: 'committed' }, { id: 12, v: 'outer' }]), JSON.stringify(r.rows))
  })

  await check('large result: 100k rows', async () => {
    const r = await client.query('select g, md5(g::text) from generate_series(1, 100000) g')
    assert(r.rows.length === 100000 && r.rows[99999].g === 100000, r.rows.length)
  })

  await check('COPY FROM STDIN / TO STDOUT (pg-copy-streams)', async () => {
    const lines = []
    for (let i = 100; i < 1100; i++) lines.push(`${i}\tcopied ${i}\n`)
    await pipeline(Readable.from(lines), client.query(copyFrom(`copy ${T} (id, v) from stdin`)))
    const chunks = []
    await pipeline(
      client.query(copyTo(`copy (select id, v from ${T} where id >= 100 order by id) to stdout`)),
      new Writable({
        write(chunk, _enc, cb) {
          chunks.push(chunk)
          cb()
        },
      }),
    )
    assert(Buffer.concat(chunks).toString() === lines.join(''), 'COPY round trip differs')
  })

  await check('pipeline mode (pg pipeline: true)', async () => {
    const c = new pg.Client(config({ pipeline: true }))
    await c.connect()
    try {
      const results = await Promise.all([...Array(10).keys()].map((i) => c.query('select $1::int * 2 as x', [i])))
      assert(JSON.stringify(results.map((r) => r.rows[0].x)) === JSON.stringify([...Array(10).keys()].map((i) => i * 2)), 'results')
      // A refused statement in the middle fails alone; the rest succeed.
      const settled = await Promise.allSettled([
        c.query('select 1 as x'),
        c.query('create table compat_pipelined (i int)'),
        c.query('select 3 as x'),
      ])
      assert(settled[0].status === 'fulfilled' && settled[2].status === 'fulfilled', JSON.stringify(settled))
      assert(settled[1].status === 'rejected' && settled[1].reason.code === '42501', JSON.stringify(settled[1]))
    } finally {
      await c.end()
    }
  })

  await check('refused DDL: 42501 DatabaseError, connection usable', async () => {
    const e = await expectCode('42501', client.query('create table compat_x (i int)'))
    assert(/rolegate/.test(e.message), e.message)
    let r = await client.query('select 1 as one')
    assert(r.rows[0].one === 1, 'select after refusal')
    // Extended protocol (parameters force Parse/Bind/Execute).
    await expectCode('42501', client.query(`drop table ${T}`, []))
    await expectCode('42501', client.query({ name: 'compat_ddl', text: `alter table ${T} add column x int` }))
    r = await client.query(`select count(*)::int as n from ${T}`)
    assert(r.rows[0].n > 0, 'select after refusals')
  })

  await check('refused DDL inside a transaction aborts it, rollback, connection usable', async () => {
    await client.query('begin')
    await client.query(`insert into ${T} (id, v) values (50, 'tx')`)
    await expectCode('42501', client.query('create index on notes (body)'))
    await expectCode('25P02', client.query('select 1'))
    await client.query('rollback')
    const r = await client.query(`select count(*)::int as n from ${T} where id = 50`)
    assert(r.rows[0].n === 0, 'the transaction was not rolled back')
  })

  await check('cancel: Client#cancel (CancelRequest, plaintext) stops pg_sleep(30) with 57014, connection usable', async () => {
    const sleep = 'select pg_sleep(30) /* compat cancel target */'
    const q = client.query(sleep)
    // A cancel that arrives before the query runs is ignored by the server,
    // so wait until it is running rather than a fixed delay.
    const watcher = new pg.Client(config())
    await watcher.connect()
    try {
      for (let i = 0; i < 1200; i++) {
        const r = await watcher.query("select count(*)::int as n from pg_stat_activity where state = 'active' and query = $1", [sleep])
        if (r.rows[0].n > 0) break
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    } finally {
      await watcher.end()
    }
    // node-postgres sends the CancelRequest from a second Client's socket.
    const canceller = new pg.Client(config())
    canceller.cancel(client, client.activeQuery)
    // Without the cancel the sleep would end normally, with no error.
    const e = await expectCode('57014', q)
    assert(/cancel/i.test(e.message), e.message)
    canceller.connection.stream.destroy()
    const r = await client.query('select 2 as two')
    assert(r.rows[0].two === 2, 'select after cancel')
  })

  await check('statement_timeout (startup parameter): 57014, connection usable', async () => {
    const c = new pg.Client(config({ statement_timeout: 500 }))
    await c.connect()
    try {
      await expectCode('57014', c.query('select pg_sleep(30)'))
      const r = await c.query('select 3 as three')
      assert(r.rows[0].three === 3, 'select after timeout')
    } finally {
      await c.end()
    }
  })

  await client.end()
  console.log(`pg ${require('pg/package.json').version}, pg-copy-streams ${require('pg-copy-streams/package.json').version}, node ${process.version}`)
}

main()
  .catch((e) => {
    failed.push('main')
    console.log(`FAIL ${e && e.stack ? e.stack : e}`)
  })
  .finally(() => {
    if (failed.length) {
      console.log(`${failed.length} check(s) failed: ${failed.join(', ')}`)
      process.exitCode = 1
    }
  })
