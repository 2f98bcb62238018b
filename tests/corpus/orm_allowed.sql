-- Statement shapes real clients send on a runtime session: every entry must be allowed.
--
-- Format (see tests/policy_corpus.rs): a header line `-- expect: allow` or
-- `-- expect: refuse <class>[|<class>...]` / `-- expect: refuse any`, optionally
-- followed by ` # note`, optional `-- switches: ...` lines directly after it,
-- then the statement text, byte-exact, up to the next header (trailing newlines
-- stripped). `$n` placeholders are what the extended protocol carries (PgJDBC,
-- psycopg 3, sqlx, node-postgres and Prisma all rewrite their own placeholder
-- syntax to `$n` before sending).
--
-- Entries marked `# lexer path` are valid PostgreSQL 15 that sqlparser 0.6x is
-- known (or likely) not to parse; the issue requires the conservative second
-- path to allow them rather than cause an outage.

-- ===================================================================== SQLAlchemy 2.x (psycopg 3 / asyncpg)
-- expect: allow # SQLAlchemy dialect init
select pg_catalog.version()

-- expect: allow # SQLAlchemy dialect init
select current_schema()

-- expect: allow # SQLAlchemy dialect init
show standard_conforming_strings

-- expect: allow # SQLAlchemy dialect init
show transaction isolation level

-- expect: allow # SQLAlchemy ORM get()
SELECT users.id AS users_id, users.email AS users_email, users.name AS users_name, users.created_at AS users_created_at 
FROM users 
WHERE users.id = $1::INTEGER

-- expect: allow # SQLAlchemy insert with RETURNING
INSERT INTO users (email, name, created_at) VALUES ($1::VARCHAR, $2::VARCHAR, now()) RETURNING users.id

-- expect: allow # SQLAlchemy 2.0 insertmanyvalues
INSERT INTO users (email, name) SELECT p0::VARCHAR, p1::VARCHAR FROM (VALUES ($1::VARCHAR, $2::VARCHAR, 0), ($3::VARCHAR, $4::VARCHAR, 1), ($5::VARCHAR, $6::VARCHAR, 2)) AS imp_sen(p0, p1, sen_counter) ORDER BY sen_counter RETURNING users.id, users.id AS id__1

-- expect: allow # SQLAlchemy unit-of-work update
UPDATE users SET email=$1::VARCHAR WHERE users.id = $2::INTEGER

-- expect: allow # SQLAlchemy unit-of-work delete
DELETE FROM users WHERE users.id = $1::INTEGER

-- expect: allow # SQLAlchemy selectinload
SELECT posts.user_id AS posts_user_id, posts.id AS posts_id, posts.title AS posts_title 
FROM posts 
WHERE posts.user_id IN ($1::INTEGER, $2::INTEGER, $3::INTEGER)

-- expect: allow # SQLAlchemy joinedload with LIMIT subquery
SELECT anon_1.users_id AS anon_1_users_id, anon_1.users_email AS anon_1_users_email, posts_1.id AS posts_1_id, posts_1.title AS posts_1_title 
FROM (SELECT users.id AS users_id, users.email AS users_email 
FROM users ORDER BY users.id 
 LIMIT $1::INTEGER OFFSET $2::INTEGER) AS anon_1 LEFT OUTER JOIN posts AS posts_1 ON anon_1.users_id = posts_1.user_id ORDER BY anon_1.users_id

-- expect: allow # SQLAlchemy count()
SELECT count(*) AS count_1 
FROM (SELECT users.id AS users_id 
FROM users 
WHERE users.email ILIKE $1::VARCHAR) AS anon_1

-- expect: allow # SQLAlchemy savepoint (begin_nested)
SAVEPOINT sa_savepoint_1

-- expect: allow
RELEASE SAVEPOINT sa_savepoint_1

-- expect: allow
ROLLBACK TO SAVEPOINT sa_savepoint_1

-- expect: allow # SQLAlchemy has_table (2.0)
SELECT pg_catalog.pg_class.relname 
FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace 
WHERE pg_catalog.pg_class.relname = $1::VARCHAR AND pg_catalog.pg_class.relkind = ANY (ARRAY[$2::VARCHAR, $3::VARCHAR, $4::VARCHAR, $5::VARCHAR, $6::VARCHAR]) AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != $7::VARCHAR

-- expect: allow # SQLAlchemy with_for_update(skip_locked=True, of=...)
SELECT jobs.id, jobs.payload 
FROM jobs 
WHERE jobs.state = $1::VARCHAR ORDER BY jobs.id 
 LIMIT $2::INTEGER FOR UPDATE OF jobs SKIP LOCKED

-- expect: allow # postgresql.insert().on_conflict_do_update
INSERT INTO users (id, email, name) VALUES ($1::INTEGER, $2::VARCHAR, $3::VARCHAR) ON CONFLICT (id) DO UPDATE SET email = excluded.email, name = excluded.name RETURNING users.id

-- expect: allow # on_conflict_do_nothing(constraint=...)
INSERT INTO users (email) VALUES ($1::VARCHAR) ON CONFLICT ON CONSTRAINT users_email_key DO NOTHING

-- expect: allow # JSONB comparator ->> and @>
SELECT events.id, events.data 
FROM events 
WHERE (events.data ->> $1::TEXT) = $2::VARCHAR AND events.data @> $3::JSONB

-- expect: allow # JSONB has_any / has_all
SELECT events.id FROM events WHERE events.data ?| $1::TEXT[] OR events.data ?& ARRAY[$2::TEXT, $3::TEXT]

-- expect: allow # JSONB has_key, path ops
SELECT events.data #>> $1::TEXT[] AS anon_1 FROM events WHERE events.data ? $2::TEXT AND (events.data -> 'meta') IS NOT NULL

-- expect: allow # ARRAY any_()
SELECT users.id FROM users WHERE $1::VARCHAR = ANY (users.tags)

-- expect: allow # CTE + window function
WITH ranked AS (SELECT posts.id AS id, posts.user_id AS user_id, row_number() OVER (PARTITION BY posts.user_id ORDER BY posts.created_at DESC) AS rn 
FROM posts) 
 SELECT ranked.id, ranked.user_id 
FROM ranked 
WHERE ranked.rn <= $1::INTEGER

-- expect: allow # recursive CTE
WITH RECURSIVE tree(id, parent_id, depth) AS (SELECT categories.id AS id, categories.parent_id AS parent_id, 0 AS depth 
FROM categories 
WHERE categories.parent_id IS NULL UNION ALL SELECT categories.id AS id, categories.parent_id AS parent_id, tree.depth + 1 AS depth 
FROM categories JOIN tree ON categories.parent_id = tree.id) 
 SELECT tree.id, tree.depth 
FROM tree

-- expect: allow # multi-tenant pattern: transaction-local tenant id
SELECT set_config('app.current_tenant_id', $1, true)

-- expect: allow # two custom settings at once
SELECT set_config('app.current_tenant_id', $1, true), set_config('app.current_user_id', $2, true)

-- expect: allow
SET LOCAL statement_timeout = '5s'

-- expect: allow # asyncpg connection reset query, sent as one string
SELECT pg_advisory_unlock_all();
CLOSE ALL;
UNLISTEN *;
RESET ALL;

-- expect: allow # asyncpg type introspection (abridged)
WITH RECURSIVE typeinfo_tree(
    oid, ns, name, kind, basetype, elemtype, elemdelim,
    range_subtype, attrtypoids, attrnames, depth)
AS (
    SELECT
        ti.oid, ti.ns, ti.name, ti.kind, ti.basetype,
        ti.elemtype, ti.elemdelim, ti.range_subtype,
        ti.attrtypoids, ti.attrnames, 0
    FROM
        (SELECT t.oid, ns.nspname AS ns, t.typname AS name, t.typtype AS kind,
                (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE NULL END) AS basetype,
                t.typelem AS elemtype, t.typdelim AS elemdelim,
                NULL::oid AS range_subtype,
                NULL::oid[] AS attrtypoids, NULL::text[] AS attrnames
           FROM pg_catalog.pg_type AS t
                INNER JOIN pg_catalog.pg_namespace ns ON ns.oid = t.typnamespace) AS ti
    WHERE
        ti.oid = any($1::oid[])
    UNION ALL
    SELECT
        ti.oid, ti.ns, ti.name, ti.kind, ti.basetype,
        ti.elemtype, ti.elemdelim, ti.range_subtype,
        ti.attrtypoids, ti.attrnames, tt.depth + 1
    FROM
        (SELECT t.oid, ns.nspname AS ns, t.typname AS name, t.typtype AS kind,
                NULL::oid AS basetype, t.typelem AS elemtype, t.typdelim AS elemdelim,
                NULL::oid AS range_subtype, NULL::oid[] AS attrtypoids, NULL::text[] AS attrnames
           FROM pg_catalog.pg_type AS t
                INNER JOIN pg_catalog.pg_namespace ns ON ns.oid = t.typnamespace) ti,
        typeinfo_tree tt
    WHERE
        (tt.elemtype IS NOT NULL AND ti.oid = tt.elemtype)
        OR (tt.attrtypoids IS NOT NULL AND ti.oid = any(tt.attrtypoids))
        OR (tt.range_subtype IS NOT NULL AND ti.oid = tt.range_subtype)
        OR (tt.basetype IS NOT NULL AND ti.oid = tt.basetype)
)
SELECT DISTINCT
    *,
    basetype::regtype::text AS basetype_name,
    elemtype::regtype::text AS elemtype_name,
    range_subtype::regtype::text AS range_subtype_name
FROM
    typeinfo_tree
ORDER BY
    depth DESC

-- ===================================================================== Django 4.2 / 5.x (psycopg 3 server-side binding)
-- expect: allow # Django connection init: time zone via set_config
SELECT set_config('TimeZone', $1, false)

-- expect: allow # Django get()
SELECT "auth_user"."id", "auth_user"."password", "auth_user"."last_login", "auth_user"."is_superuser", "auth_user"."username", "auth_user"."first_name", "auth_user"."last_name", "auth_user"."email", "auth_user"."is_staff", "auth_user"."is_active", "auth_user"."date_joined" FROM "auth_user" WHERE "auth_user"."username" = $1 LIMIT 21

-- expect: allow # Django exists()
SELECT 1 AS "a" FROM "django_session" WHERE "django_session"."session_key" = $1 LIMIT 1

-- expect: allow # Django count()
SELECT COUNT(*) AS "__count" FROM "blog_post" WHERE "blog_post"."published" AND "blog_post"."author_id" = $1

-- expect: allow # Django atomic() savepoint names
SAVEPOINT "s140_x1"

-- expect: allow
RELEASE SAVEPOINT "s140_x1"

-- expect: allow
ROLLBACK TO SAVEPOINT "s140_x1"

-- expect: allow # Django save() insert
INSERT INTO "django_session" ("session_key", "session_data", "expire_date") VALUES ($1, $2, $3)

-- expect: allow # Django create() with RETURNING
INSERT INTO "blog_post" ("title", "body", "author_id", "created_at", "published") VALUES ($1, $2, $3, $4, $5) RETURNING "blog_post"."id"

-- expect: allow # Django 5.2 bulk_create via UNNEST
INSERT INTO "blog_tag" ("name", "slug") SELECT * FROM UNNEST(($1)::varchar(50)[], ($2)::varchar(50)[]) RETURNING "blog_tag"."id"

-- expect: allow # Django bulk_create(ignore_conflicts=True)
INSERT INTO "blog_tag" ("name", "slug") VALUES ($1, $2), ($3, $4), ($5, $6) ON CONFLICT DO NOTHING

-- expect: allow # Django bulk_create(update_conflicts=True)
INSERT INTO "blog_tag" ("name", "slug") VALUES ($1, $2), ($3, $4) ON CONFLICT("slug") DO UPDATE SET "name" = EXCLUDED."name" RETURNING "blog_tag"."id"

-- expect: allow # Django update()
UPDATE "auth_user" SET "last_login" = $1::timestamptz WHERE "auth_user"."id" = $2

-- expect: allow # Django delete() collector
DELETE FROM "blog_comment" WHERE "blog_comment"."post_id" IN ($1, $2, $3)

-- expect: allow # Django icontains
SELECT "blog_post"."id", "blog_post"."title" FROM "blog_post" WHERE UPPER("blog_post"."title"::text) LIKE UPPER($1) ORDER BY "blog_post"."created_at" DESC LIMIT 20 OFFSET 40

-- expect: allow # Django JSONField lookups
SELECT "app_event"."id" FROM "app_event" WHERE ("app_event"."data" -> $1) = $2 AND "app_event"."data" @> $3::jsonb AND "app_event"."data" ?| $4

-- expect: allow # Django ArrayField overlap/contains/index
SELECT "app_item"."id" FROM "app_item" WHERE "app_item"."tags" && $1::varchar(20)[] AND "app_item"."tags" @> $2::varchar(20)[] AND "app_item"."tags"[1] = $3

-- expect: allow # Django Exists(OuterRef) + Subquery annotation
SELECT "blog_post"."id", EXISTS(SELECT 1 AS "a" FROM "blog_comment" U0 WHERE U0."post_id" = ("blog_post"."id") LIMIT 1) AS "has_comments", (SELECT U0."body" FROM "blog_comment" U0 WHERE U0."post_id" = ("blog_post"."id") ORDER BY U0."created_at" DESC LIMIT 1) AS "latest" FROM "blog_post"

-- expect: allow # Django window function annotation
SELECT "blog_post"."id", RANK() OVER (PARTITION BY "blog_post"."author_id" ORDER BY "blog_post"."score" DESC) AS "rank" FROM "blog_post"

-- expect: allow # Django select_for_update(skip_locked=True)
SELECT "jobs_job"."id", "jobs_job"."payload" FROM "jobs_job" WHERE "jobs_job"."state" = $1 ORDER BY "jobs_job"."id" ASC LIMIT 10 FOR UPDATE SKIP LOCKED

-- expect: allow # Django select_for_update(of=("self",), no_key=True)
SELECT "jobs_job"."id" FROM "jobs_job" INNER JOIN "jobs_queue" ON ("jobs_job"."queue_id" = "jobs_queue"."id") WHERE "jobs_job"."id" = $1 FOR NO KEY UPDATE OF "jobs_job"

-- expect: allow # Django TruncMonth / Extract with AT TIME ZONE
SELECT DATE_TRUNC('month', "blog_post"."created_at" AT TIME ZONE 'UTC') AS "month", EXTRACT(YEAR FROM "blog_post"."created_at" AT TIME ZONE 'UTC') AS "year", COUNT("blog_post"."id") AS "n" FROM "blog_post" GROUP BY 1, 2 ORDER BY 1

-- expect: allow # Django full text search
SELECT "blog_post"."id", ts_rank(to_tsvector(COALESCE("blog_post"."body", '')), plainto_tsquery($1)) AS "rank" FROM "blog_post" WHERE to_tsvector(COALESCE("blog_post"."body", '')) @@ (plainto_tsquery($2)) = true

-- expect: allow # Django distinct on
SELECT DISTINCT ON ("blog_post"."author_id") "blog_post"."id", "blog_post"."author_id" FROM "blog_post" ORDER BY "blog_post"."author_id" ASC, "blog_post"."created_at" DESC

-- expect: allow # Django server-side cursor (iterator())
DECLARE "_django_curs_140241_sync_1" NO SCROLL CURSOR WITHOUT HOLD FOR SELECT "blog_post"."id", "blog_post"."title" FROM "blog_post"

-- expect: allow # psycopg fetchmany on named cursor
FETCH FORWARD 2000 FROM "_django_curs_140241_sync_1"

-- expect: allow
CLOSE "_django_curs_140241_sync_1"

-- expect: allow # Django introspection: get_table_list
SELECT
    c.relname,
    CASE
        WHEN c.relispartition THEN 'p'
        WHEN c.relkind IN ('m', 'v') THEN 'v'
        ELSE 't'
    END,
    obj_description(c.oid, 'pg_class')
FROM pg_catalog.pg_class c
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('f', 'm', 'p', 'r', 'v')
    AND n.nspname NOT IN ('pg_catalog', 'pg_toast')
    AND pg_catalog.pg_table_is_visible(c.oid)

-- expect: allow # Django migration recorder read (runtime check for unapplied migrations)
SELECT "django_migrations"."id", "django_migrations"."app", "django_migrations"."name", "django_migrations"."applied" FROM "django_migrations"

-- expect: allow # Django sqlsequencereset output: setval is a sequence write, not DDL
SELECT setval(pg_get_serial_sequence('"blog_post"','id'), coalesce(max("id"), 1), max("id") IS NOT null) FROM "blog_post";

-- ===================================================================== ActiveRecord 7.x (pg gem)
-- expect: allow # AR configure_connection
SET client_min_messages TO 'warning'

-- expect: allow # AR configure_connection: pins the proxy's own requirement, changes nothing
SET standard_conforming_strings = on

-- expect: allow # AR configure_connection
SET intervalstyle = iso_8601

-- expect: allow # AR configure_connection
SET SESSION timezone TO 'UTC'

-- expect: allow # libpq PQsetClientEncoding (pg gem with `encoding: unicode`): setting UTF8 changes nothing
set client_encoding to 'UTF8'

-- expect: allow # AR exists?
SELECT 1 AS one FROM "users" WHERE "users"."email" = $1 LIMIT $2

-- expect: allow # AR find
SELECT "users".* FROM "users" WHERE "users"."id" = $1 LIMIT $2

-- expect: allow # AR where(id: [...])
SELECT "users".* FROM "users" WHERE "users"."id" IN ($1, $2, $3)

-- expect: allow # AR create
INSERT INTO "users" ("email", "name", "created_at", "updated_at") VALUES ($1, $2, $3, $4) RETURNING "id"

-- expect: allow # AR update
UPDATE "users" SET "name" = $1, "updated_at" = $2 WHERE "users"."id" = $3

-- expect: allow # AR destroy
DELETE FROM "users" WHERE "users"."id" = $1

-- expect: allow # AR upsert_all
INSERT INTO "users" ("email","name","created_at","updated_at") VALUES ('a@example.com', 'A', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP), ('b@example.com', 'B', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) ON CONFLICT ("email") DO UPDATE SET updated_at=(CASE WHEN ("users"."name" IS NOT DISTINCT FROM excluded."name") THEN "users".updated_at ELSE CURRENT_TIMESTAMP END),"name"=excluded."name" RETURNING "id"

-- expect: allow # AR pagination
SELECT "posts".* FROM "posts" WHERE "posts"."user_id" = $1 ORDER BY "posts"."created_at" DESC LIMIT $2 OFFSET $3

-- expect: allow # AR lock!
SELECT "users".* FROM "users" WHERE "users"."id" = $1 LIMIT $2 FOR UPDATE

-- expect: allow # AR transaction savepoints
SAVEPOINT active_record_1

-- expect: allow
RELEASE SAVEPOINT active_record_1

-- expect: allow
ROLLBACK TO SAVEPOINT active_record_1

-- expect: allow # AR pending-migration check at boot
SELECT "schema_migrations"."version" FROM "schema_migrations" ORDER BY "schema_migrations"."version" ASC

-- expect: allow
SELECT "ar_internal_metadata"."value" FROM "ar_internal_metadata" WHERE "ar_internal_metadata"."key" = $1 LIMIT $2

-- expect: allow # AR OID type map load
SELECT t.oid, t.typname, t.typelem, t.typdelim, t.typinput, r.rngsubtype, t.typtype, t.typbasetype
FROM pg_type as t
LEFT JOIN pg_range as r ON oid = rngtypid
WHERE
  t.typname IN ('int2', 'int4', 'int8', 'oid', 'float4', 'float8', 'numeric', 'bool', 'timestamp', 'timestamptz')
  OR t.typtype IN ('r', 'e', 'd')
  OR t.typinput = 'array_in(cstring,oid,integer)'::regprocedure
  OR t.typelem != 0

-- expect: allow # AR connection checks
SHOW search_path

-- expect: allow
SHOW max_identifier_length

-- expect: allow # AR migration advisory lock helpers (also used by good_job etc.)
SELECT pg_try_advisory_lock(4052446372921712896)

-- expect: allow
SELECT pg_advisory_unlock(4052446372921712896)

-- expect: allow # AR insert_all with array literal
INSERT INTO "items" ("tags","created_at","updated_at") VALUES ('{a,b}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) ON CONFLICT  DO NOTHING RETURNING "id"

-- ===================================================================== Prisma 5.x
-- expect: allow # Prisma findMany
SELECT "public"."User"."id", "public"."User"."email", "public"."User"."name" FROM "public"."User" WHERE ("public"."User"."email" = $1 AND 1=1) ORDER BY "public"."User"."id" ASC LIMIT $2 OFFSET $3

-- expect: allow # Prisma create
INSERT INTO "public"."User" ("email","name") VALUES ($1,$2) RETURNING "public"."User"."id", "public"."User"."email", "public"."User"."name"

-- expect: allow # Prisma update
UPDATE "public"."User" SET "name" = $1 WHERE ("public"."User"."id" = $2 AND 1=1) RETURNING "public"."User"."id"

-- expect: allow # Prisma deleteMany
DELETE FROM "public"."Post" WHERE ("public"."Post"."id" IN ($1,$2,$3) AND 1=1)

-- expect: allow # Prisma count
SELECT COUNT(*) AS "_count._all" FROM (SELECT "public"."User"."id" FROM "public"."User" WHERE 1=1 OFFSET $1) AS "sub"

-- expect: allow # Prisma include (separate query)
SELECT "public"."Post"."id", "public"."Post"."title", "public"."Post"."authorId" FROM "public"."Post" WHERE "public"."Post"."authorId" IN ($1,$2,$3) OFFSET $4

-- expect: allow # Prisma relationJoins (lateral JSON aggregation)
SELECT "t1"."id", "t1"."email", "User_posts"."__prisma_data__" AS "posts" FROM "public"."User" AS "t1" LEFT JOIN LATERAL (SELECT COALESCE(JSONB_AGG("__prisma_data__"), '[]') AS "__prisma_data__" FROM (SELECT "t4"."__prisma_data__" FROM (SELECT JSONB_BUILD_OBJECT('id', "t3"."id", 'title', "t3"."title") AS "__prisma_data__" FROM (SELECT "t2".* FROM "public"."Post" AS "t2" WHERE "t1"."id" = "t2"."authorId") AS "t3") AS "t4") AS "t5") AS "User_posts" ON true WHERE "t1"."id" = $1 LIMIT $2

-- expect: allow # Prisma upsert (native)
INSERT INTO "public"."User" ("email","name") VALUES ($1,$2) ON CONFLICT ("email") DO UPDATE SET "name" = $3 WHERE ("public"."User"."email" = $4 AND 1=1) RETURNING "public"."User"."id", "public"."User"."email"

-- expect: allow # Prisma JSON filter
SELECT "public"."Event"."id" FROM "public"."Event" WHERE ("public"."Event"."payload"::jsonb @> $1 AND 1=1) OFFSET $2

-- expect: allow # Prisma interactive transaction isolation
BEGIN ISOLATION LEVEL SERIALIZABLE

-- expect: allow # Prisma health check
SELECT 1

-- ===================================================================== Hibernate 6 (PgJDBC: `?` arrives as `$n`)
-- expect: allow # Hibernate 6 limit: fetch first ? rows only
select u1_0.id,u1_0.email,u1_0.name from users u1_0 where u1_0.email=$1 fetch first $2 rows only

-- expect: allow # Hibernate 6 offset/limit
select p1_0.id,p1_0.title from posts p1_0 order by p1_0.id offset $1 rows fetch first $2 rows only

-- expect: allow # Hibernate sequence allocation
select nextval('users_seq')

-- expect: allow # Hibernate batch insert
insert into users (email,name,id) values ($1,$2,$3)

-- expect: allow
update users set email=$1,name=$2,version=$3 where id=$4 and version=$5

-- expect: allow
delete from users where id=$1

-- expect: allow # Hibernate pessimistic lock
select u1_0.id,u1_0.version from users u1_0 where u1_0.id=$1 for update of u1_0

-- expect: allow # Hibernate criteria ilike with escape '\' (standard string: one backslash)
select u1_0.id from users u1_0 where lower(u1_0.email) like lower($1) escape '\'

-- expect: allow # PgJDBC Connection.setTransactionIsolation
SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED

-- expect: allow # PgJDBC setReadOnly
SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY

-- expect: allow # PgJDBC
SET extra_float_digits = 3

-- expect: allow # PgJDBC type lookup
SELECT n.nspname = ANY(current_schemas(true)), n.nspname, t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid WHERE t.oid = $1

-- expect: allow # PgJDBC DatabaseMetaData.getPrimaryKeys (abridged)
SELECT NULL AS TABLE_CAT, n.nspname AS TABLE_SCHEM,   ct.relname AS TABLE_NAME, a.attname AS COLUMN_NAME,   (information_schema._pg_expandarray(i.indkey)).n AS KEY_SEQ, ci.relname AS PK_NAME,   information_schema._pg_expandarray(i.indkey) AS KEYS, a.attnum AS A_ATTNUM FROM pg_catalog.pg_class ct   JOIN pg_catalog.pg_attribute a ON (ct.oid = a.attrelid)   JOIN pg_catalog.pg_namespace n ON (ct.relnamespace = n.oid)   JOIN pg_catalog.pg_index i ON ( a.attrelid = i.indrelid)   JOIN pg_catalog.pg_class ci ON (ci.oid = i.indexrelid) WHERE true  AND ct.relname = E'users' AND i.indisprimary

-- expect: allow # Hibernate schema validation
select * from information_schema.sequences

-- ===================================================================== sqlx 0.8
-- expect: allow # sqlx = ANY($1)
SELECT id, email FROM users WHERE id = ANY($1)

-- expect: allow # sqlx bulk insert via UNNEST
INSERT INTO users (email, name) SELECT * FROM UNNEST($1::text[], $2::text[]) RETURNING id

-- expect: allow # sqlx type info
SELECT typname, typtype, typcategory, typrelid, typelem, typbasetype FROM pg_catalog.pg_type WHERE oid = $1

-- expect: allow # sqlx offline-mode nullability check (compile time)
EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE sqlx_s_1

-- expect: allow # sqlx PgListener::listen_all sends one string
LISTEN "orders";LISTEN "payments";

-- expect: allow # sqlx advisory lock
SELECT pg_advisory_xact_lock($1)

-- expect: allow # sqlx exists
SELECT EXISTS(SELECT 1 FROM users WHERE email = $1) AS "exists!"

-- expect: allow # sqlx migrations table read
SELECT version, checksum FROM _sqlx_migrations ORDER BY version

-- ===================================================================== pgbench / node-postgres / misc drivers
-- expect: allow # pgbench tpcb-like
UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;

-- expect: allow
SELECT abalance FROM pgbench_accounts WHERE aid = $1;

-- expect: allow
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);

-- expect: allow # pgbouncer server_reset_query
DISCARD ALL

-- expect: allow
DISCARD PLANS

-- expect: allow
DISCARD SEQUENCES

-- expect: allow # DISCARD TEMP drops the session's own temp objects only
DISCARD TEMP

-- expect: allow # RESET ALL only restores defaults; role/session_authorization are not reset by it (GUC_NO_RESET_ALL)
RESET ALL

-- ===================================================================== transaction control
-- expect: allow
BEGIN

-- expect: allow
BEGIN ISOLATION LEVEL REPEATABLE READ

-- expect: allow
START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE

-- expect: allow
BEGIN TRANSACTION READ WRITE

-- expect: allow
SET TRANSACTION ISOLATION LEVEL SERIALIZABLE

-- expect: allow
SET TRANSACTION READ ONLY

-- expect: allow # pg_dump-style snapshot import
SET TRANSACTION SNAPSHOT '00000003-0000001B-1'

-- expect: allow
COMMIT

-- expect: allow
COMMIT AND CHAIN

-- expect: allow
END

-- expect: allow
ROLLBACK

-- expect: allow
ABORT

-- expect: allow
ROLLBACK AND NO CHAIN

-- expect: allow
COMMIT WORK

-- expect: allow
ROLLBACK TRANSACTION TO SAVEPOINT sp1

-- expect: allow
RELEASE sp1

-- expect: allow # multi-statement string of allowed statements
BEGIN; SET LOCAL statement_timeout = '2s'; SELECT set_config('app.current_tenant_id', '42', true); SELECT * FROM invoices WHERE tenant_id = 42; COMMIT;

-- expect: allow # lexer path
PREPARE TRANSACTION 'txn-7f3a'

-- expect: allow # lexer path
COMMIT PREPARED 'txn-7f3a'

-- expect: allow # lexer path
ROLLBACK PREPARED 'txn-7f3a'

-- expect: allow # lexer path
SET CONSTRAINTS ALL DEFERRED

-- expect: allow # lexer path
SET CONSTRAINTS orders_customer_fk, orders_invoice_fk IMMEDIATE

-- ===================================================================== session settings
-- expect: allow
SET statement_timeout = 0

-- expect: allow
SET LOCAL lock_timeout = '2s'

-- expect: allow
SET application_name = 'billing-worker'

-- expect: allow
SET TIME ZONE 'UTC'

-- expect: allow
SET timezone TO 'Europe/Berlin'

-- expect: allow
SET datestyle = ISO, MDY

-- expect: allow
SET bytea_output = 'hex'

-- expect: allow
SET SESSION idle_in_transaction_session_timeout = 60000

-- expect: allow
SET work_mem = '64MB'

-- expect: allow
SET plan_cache_mode = force_custom_plan

-- expect: allow # custom setting
SET app.current_tenant_id = '42'

-- expect: allow # custom setting, quoted name
SET "app.current_tenant_id" TO '42'

-- expect: allow # custom setting, transaction-local
SET LOCAL app.current_user_id = 7

-- expect: allow # a custom setting merely named like row_security is harmless
SET app.row_security = 'off'

-- expect: allow
RESET statement_timeout

-- expect: allow
RESET app.current_tenant_id

-- expect: allow # search_path is an ordinary setting; pg_catalog is still searched first unless listed later, and the runtime role cannot create functions
SET search_path TO "$user", public

-- expect: allow # search_path with pg_temp: the runtime role cannot create temp functions (CREATE FUNCTION is DDL)
SET search_path = app, public, pg_temp

-- expect: allow
SHOW ALL

-- expect: allow
SHOW TRANSACTION ISOLATION LEVEL

-- expect: allow
SHOW server_version

-- expect: allow # reading row_security is not toggling it
SHOW row_security

-- expect: allow
SHOW session_authorization

-- expect: allow
SELECT current_setting('app.current_tenant_id', true)

-- expect: allow
SELECT current_setting('row_security')

-- expect: allow # set_config of an ordinary setting with a constant name
SELECT set_config('search_path', 'app, public', false)

-- expect: allow
SELECT set_config('statement_timeout', '5s', true)

-- expect: allow # the value may be anything, only the name matters
SELECT set_config('app.current_tenant_id', (SELECT tenant_id::text FROM memberships WHERE user_id = $1 LIMIT 1), true)

-- expect: allow # a custom setting merely named like row_security
SELECT set_config('app.row_security', 'off', false)

-- expect: allow
SELECT name, setting, source FROM pg_settings WHERE name IN ('row_security', 'search_path')

-- ===================================================================== cursors
-- expect: allow
DECLARE c1 CURSOR WITH HOLD FOR SELECT id, email FROM users ORDER BY id

-- expect: allow
DECLARE c2 BINARY INSENSITIVE SCROLL CURSOR FOR SELECT * FROM posts

-- expect: allow
FETCH 100 FROM c1

-- expect: allow
FETCH NEXT FROM c1

-- expect: allow # lexer path
FETCH FORWARD 10 FROM c1

-- expect: allow # lexer path
FETCH ABSOLUTE 5 FROM c2

-- expect: allow # lexer path
FETCH BACKWARD ALL IN c2

-- expect: allow # lexer path
FETCH RELATIVE -1 FROM c2

-- expect: allow # lexer path
FETCH PRIOR IN c2

-- expect: allow # lexer path
MOVE NEXT IN c1

-- expect: allow # lexer path
MOVE ABSOLUTE 0 IN c2

-- expect: allow # lexer path
MOVE BACKWARD 5 FROM c2

-- expect: allow # lexer path
MOVE LAST IN c2

-- expect: allow
CLOSE c1

-- expect: allow
CLOSE ALL

-- expect: allow # positioned update through a cursor
UPDATE users SET name = $1 WHERE CURRENT OF c1

-- expect: allow
DELETE FROM users WHERE CURRENT OF c1

-- ===================================================================== PREPARE / EXECUTE / DEALLOCATE
-- expect: allow
PREPARE find_user (int) AS SELECT * FROM users WHERE id = $1

-- expect: allow
PREPARE ins_event (text, jsonb) AS INSERT INTO events (kind, data) VALUES ($1, $2) RETURNING id

-- expect: allow
PREPARE bump AS UPDATE counters SET n = n + 1 WHERE name = $1

-- expect: allow # a DELETE body is fine
PREPARE purge (timestamptz) AS DELETE FROM sessions WHERE expires_at < $1

-- expect: allow
EXECUTE find_user(5)

-- expect: allow
EXECUTE ins_event('signup', '{"plan": "free"}')

-- expect: allow
DEALLOCATE find_user

-- expect: allow
DEALLOCATE PREPARE ins_event

-- expect: allow
DEALLOCATE ALL

-- expect: allow
EXPLAIN EXECUTE find_user(5)

-- ===================================================================== LISTEN / NOTIFY
-- expect: allow
LISTEN "events"

-- expect: allow
LISTEN order_created

-- expect: allow
NOTIFY order_created

-- expect: allow
NOTIFY order_created, 'id=42'

-- expect: allow
UNLISTEN order_created

-- expect: allow
UNLISTEN *

-- expect: allow
SELECT pg_notify('order_created', $1)

-- ===================================================================== COPY to/from the client
-- expect: allow
COPY users (id, email) FROM STDIN

-- expect: allow
COPY users FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER ',', NULL '', QUOTE '"')

-- expect: allow # lexer path (COPY option forms)
COPY users FROM STDIN WITH (FORMAT csv, HEADER match, FORCE_NULL (email), ESCAPE '\')

-- expect: allow
COPY users TO STDOUT WITH (FORMAT binary)

-- expect: allow # sqlx copy_in_raw / tokio-postgres binary copy
COPY users (id, email, name) FROM STDIN (FORMAT binary)

-- expect: allow
COPY (SELECT id, email FROM users WHERE created_at > now() - interval '1 day') TO STDOUT WITH CSV HEADER

-- expect: allow # lexer path (pre-9.0 option syntax, still accepted)
COPY users TO STDOUT DELIMITER '|' NULL AS '\N'

-- expect: allow # lexer path (pre-9.0 option syntax)
COPY users FROM STDIN CSV HEADER

-- expect: allow # lexer path (COPY ... WHERE)
COPY users FROM STDIN WHERE id > 1000

-- expect: allow # lexer path (ancient COPY BINARY syntax, still accepted by PG 15)
COPY BINARY users TO STDOUT

-- expect: allow # ENCODING only describes the COPY data stream, not the statement text
COPY users TO STDOUT WITH (FORMAT csv, ENCODING 'LATIN1')

-- expect: allow # psql \copy sends this
COPY  users (id, email) FROM STDIN

-- ===================================================================== LOCK / EXPLAIN
-- expect: allow
LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE

-- expect: allow
LOCK users, posts IN ACCESS SHARE MODE NOWAIT

-- expect: allow
LOCK TABLE ONLY accounts IN ACCESS EXCLUSIVE MODE

-- expect: allow
EXPLAIN SELECT * FROM users WHERE id = 1

-- expect: allow
EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM users WHERE email = 'a@example.com'

-- expect: allow
EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) UPDATE users SET name = 'x' WHERE id = 1

-- expect: allow
EXPLAIN ANALYZE DELETE FROM sessions WHERE expires_at < now()

-- expect: allow
EXPLAIN VERBOSE INSERT INTO events (kind) VALUES ('x')

-- expect: allow # British spelling is accepted by PostgreSQL
EXPLAIN ANALYSE SELECT 1

-- expect: allow # lexer path (EXPLAIN option list with values)
EXPLAIN (ANALYZE true, COSTS off, SETTINGS on, WAL, TIMING false, SUMMARY) WITH x AS (SELECT 1) SELECT * FROM x

-- ===================================================================== general DML
-- expect: allow
SELECT u.id, u.email FROM users u WHERE u.email ILIKE $1 ORDER BY u.id LIMIT $2 OFFSET $3

-- expect: allow # keyset pagination with row comparison
SELECT id, created_at FROM posts WHERE (created_at, id) < ($1, $2) ORDER BY created_at DESC, id DESC LIMIT 50

-- expect: allow
SELECT * FROM users WHERE id = ANY(ARRAY[1, 2, 3])

-- expect: allow
SELECT * FROM users WHERE id <> ALL($1::int[])

-- expect: allow
SELECT * FROM users WHERE email ~* $1 AND name NOT ILIKE '%bot%' AND name SIMILAR TO '[A-Z]%'

-- expect: allow
SELECT * FROM users WHERE deleted_at IS NULL AND name IS DISTINCT FROM $1

-- expect: allow
SELECT tags[1], tags[2:3], array_length(tags, 1), cardinality(tags) FROM users

-- expect: allow
SELECT data->'address'->>'city', data#>'{a,b}', data#>>'{a,b}', jsonb_array_length(data->'items') FROM users

-- expect: allow # jsonpath literal contains $ ? @ — it is a string
SELECT jsonb_path_query(data, '$.items[*] ? (@.price > 10)') FROM orders

-- expect: allow
SELECT jsonb_build_object('id', id, 'email', email), json_agg(t) FROM users t GROUP BY id

-- expect: allow
SELECT count(*) FILTER (WHERE state = 'open'), percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) FROM orders

-- expect: allow
SELECT string_agg(name, ', ' ORDER BY name), array_agg(DISTINCT id) FROM users

-- expect: allow
SELECT sum(amount) OVER (ORDER BY created_at ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), lag(amount) OVER w FROM orders WINDOW w AS (PARTITION BY customer_id ORDER BY created_at)

-- expect: allow
SELECT g.i, x.* FROM generate_series(1, 10) AS g(i) LEFT JOIN LATERAL (SELECT * FROM orders o WHERE o.id = g.i) x ON true

-- expect: allow
SELECT * FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, ord)

-- expect: allow
SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(a int, b text)

-- expect: allow
SELECT customer_id, date_trunc('day', created_at), sum(amount) FROM orders GROUP BY GROUPING SETS ((customer_id), (date_trunc('day', created_at)), ())

-- expect: allow
SELECT * FROM orders TABLESAMPLE BERNOULLI (1) REPEATABLE (42)

-- expect: allow
SELECT id FROM users ORDER BY name COLLATE "C" NULLS FIRST FETCH FIRST 3 ROWS WITH TIES

-- expect: allow
SELECT interval '1 day', date '2024-01-01', timestamptz '2024-01-01 00:00:00+00', B'1010', X'FF', 1.5e10, .5

-- expect: allow
SELECT (DATE '2024-01-01', DATE '2024-02-01') OVERLAPS (DATE '2024-01-15', DATE '2024-03-01')

-- expect: allow
SELECT to_tsvector('english', body) @@ websearch_to_tsquery('english', $1) FROM posts

-- expect: allow
SELECT '[1,10)'::int4range @> 5, inet '10.0.0.1' << inet '10.0.0.0/8', point '(1,1)' <@ box '((0,0),(2,2))'

-- expect: allow
INSERT INTO users DEFAULT VALUES RETURNING id

-- expect: allow
INSERT INTO audit_log (actor, action, at) SELECT $1, 'login', now() WHERE NOT EXISTS (SELECT 1 FROM audit_log WHERE actor = $1 AND at > now() - interval '1 minute')

-- expect: allow
INSERT INTO counters (name, n) VALUES ($1, 1) ON CONFLICT (name) WHERE name <> '' DO UPDATE SET n = counters.n + 1 WHERE counters.n < 1000000 RETURNING n

-- expect: allow
UPDATE orders o SET status = 'shipped', shipped_at = now() FROM shipments s WHERE s.order_id = o.id AND s.id = $1 RETURNING o.*

-- expect: allow
UPDATE users SET (name, email) = (SELECT name, email FROM staging WHERE staging.id = users.id) WHERE id IN (SELECT id FROM staging)

-- expect: allow
DELETE FROM sessions s USING users u WHERE s.user_id = u.id AND u.disabled RETURNING s.id

-- expect: allow
WITH moved AS (DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING *) INSERT INTO queue_archive SELECT * FROM moved

-- expect: allow # PostgreSQL 15 MERGE
MERGE INTO inventory i USING (VALUES ($1::int, $2::int)) AS v(sku, qty) ON i.sku = v.sku WHEN MATCHED THEN UPDATE SET qty = i.qty + v.qty WHEN NOT MATCHED THEN INSERT (sku, qty) VALUES (v.sku, v.qty)

-- expect: allow
VALUES (1, 'one'), (2, 'two') ORDER BY 1

-- expect: allow
SELECT nextval('orders_id_seq'), currval('orders_id_seq')

-- expect: allow
SELECT pg_backend_pid(), txid_current(), pg_current_xact_id(), now(), clock_timestamp()

-- expect: allow
SELECT version(), current_database(), current_user, session_user, pg_is_in_recovery()

-- expect: allow
SELECT pg_size_pretty(pg_total_relation_size('users'))

-- expect: allow # sleeping is not one of the denied capabilities
SELECT pg_sleep(0.05)

-- expect: allow
SELECT pid, state, wait_event FROM pg_stat_activity WHERE datname = current_database()

-- expect: allow
SELECT pg_try_advisory_xact_lock(hashtext($1))

-- expect: allow
SELECT pg_advisory_lock(42); SELECT pg_advisory_unlock(42)

-- expect: allow # a statement ending with a line comment and no newline
SELECT 1 -- trailing comment

-- expect: allow # a comment before the statement
/* request_id=7f3a trace=abc */ SELECT id FROM users WHERE id = $1

-- expect: allow # sqlcommenter style trailing comment
SELECT * FROM users WHERE id = $1 /*action='show',controller='users',framework='rails'*/

-- expect: allow # non-ASCII text and identifiers
SELECT 'héllo wörld', "naïve" FROM "ünïcode_täble"

-- expect: allow # empty statements between semicolons are fine
SELECT 1;;;

-- ===================================================================== valid PostgreSQL a naive sqlparser classifier refuses
-- expect: allow # lexer path: array subscript assignment
UPDATE t SET a[1] = 2

-- expect: allow # lexer path: array subscript assignment, slice
UPDATE users SET tags[2:3] = ARRAY['x', 'y'] WHERE id = $1

-- expect: allow # lexer path: subscript in INSERT column list
INSERT INTO t (a[1]) VALUES (1)

-- expect: allow # lexer path: composite field in INSERT column list
INSERT INTO shipments (id, addr.city, addr.zip) VALUES ($1, $2, $3)

-- expect: allow # lexer path: composite field assignment
UPDATE shipments SET addr.city = $1 WHERE id = $2

-- expect: allow # lexer path: XML functions
SELECT xmlelement(name "user", xmlattributes(id AS "id"), xmlforest(email, name AS "full-name")) FROM users

-- expect: allow # lexer path: XML functions
SELECT xmlagg(xmlelement(name item, name) ORDER BY name), xmlserialize(content xmlparse(document $1) AS text) FROM items

-- expect: allow # lexer path: XML predicates
SELECT xpath('/a/b/text()', doc), doc IS DOCUMENT, xmlexists('//b' PASSING BY REF doc) FROM docs

-- expect: allow # lexer path: VARIADIC
SELECT concat_ws(',', VARIADIC ARRAY['a', 'b', 'c'])

-- expect: allow # lexer path: VARIADIC with a parameter
SELECT format('%s-%s', VARIADIC $1::text[])

-- expect: allow # lexer path: (t.c).* expansion
SELECT (u.addr).* FROM users u

-- expect: allow # lexer path: (row).* of a subquery row
SELECT (x).* FROM (SELECT u FROM users u) AS s(x)

-- expect: allow # lexer path: OVERRIDING SYSTEM VALUE
INSERT INTO posts (id, title) OVERRIDING SYSTEM VALUE VALUES (1000, 'imported')

-- expect: allow # lexer path: OVERRIDING USER VALUE
INSERT INTO posts (id, title) OVERRIDING USER VALUE SELECT id, title FROM staging_posts

-- expect: allow # lexer path: TABLE command
TABLE users

-- expect: allow # lexer path: TABLE inside a set operation
TABLE users UNION ALL TABLE archived_users

-- expect: allow # lexer path: explicit OPERATOR() syntax (psql uses it)
SELECT relname FROM pg_catalog.pg_class WHERE relname OPERATOR(pg_catalog.~) '^(users)$' COLLATE pg_catalog.default

-- expect: allow # lexer path: trigram / custom operator
SELECT name FROM users WHERE name % $1 ORDER BY name <-> $1 LIMIT 5

-- expect: allow # lexer path: range adjacency and prefix operators
SELECT int4range(1, 5) -|- int4range(5, 9), |/ 25.0, @ -5, ~ 5

-- expect: allow # lexer path: CTE SEARCH / CYCLE clauses (PG14+)
WITH RECURSIVE t(id, parent) AS (SELECT id, parent FROM nodes WHERE parent IS NULL UNION ALL SELECT n.id, n.parent FROM nodes n JOIN t ON n.parent = t.id) SEARCH DEPTH FIRST BY id SET ordercol CYCLE id SET is_cycle USING path SELECT * FROM t ORDER BY ordercol

-- expect: allow # lexer path: ROWS FROM
SELECT * FROM ROWS FROM (generate_series(1, 3), unnest(ARRAY['a', 'b'])) AS r(n, s)

-- expect: allow # lexer path: window frame with GROUPS / EXCLUDE
SELECT sum(x) OVER (ORDER BY y GROUPS BETWEEN 1 PRECEDING AND 1 FOLLOWING EXCLUDE CURRENT ROW) FROM t

-- expect: allow # lexer path: row constructor cast and composite comparison
SELECT ROW(1, 'a')::pair, ROW(a, b) IN (SELECT a, b FROM t2) FROM t

-- expect: allow # lexer path: deeply nested parentheses (beyond sqlparser's recursion limit of 50)
SELECT ((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((1))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))

-- expect: allow # deeply nested scalar subqueries (within the tree depth PostgreSQL's reading decodes)
SELECT (SELECT (SELECT (SELECT (SELECT (SELECT (SELECT (SELECT (SELECT (SELECT (SELECT (SELECT (SELECT 1))))))))))))

-- expect: allow # E-strings with backslash escapes, including an escaped quote (U& strings left out: the issue lets the lexer path refuse any U& escape)
SELECT E'line1\nline2\ttab', E'it\'s', e'\x41\101\u0041'

-- expect: allow # lexer path: string continuation across a newline
SELECT 'abc'
    'def' AS joined

-- expect: allow # dollar-quoted string with a tag
SELECT $body$it's a $$ dollar $$ string$body$

-- ===================================================================== psql -E: the \d family (PostgreSQL 15 psql, captured from a real server)
-- expect: allow # psql -E \d (PostgreSQL 15 psql), query 1
SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','v','m','S','f','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;

-- expect: allow # psql -E \dt (PostgreSQL 15 psql), query 1
SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','')
      AND n.nspname <> 'pg_catalog'
      AND n.nspname !~ '^pg_toast'
      AND n.nspname <> 'information_schema'
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 1,2;

-- expect: allow # psql -E \d+ users (PostgreSQL 15 psql), query 1
SELECT c.oid,
  n.nspname,
  c.relname
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname OPERATOR(pg_catalog.~) '^(users)$' COLLATE pg_catalog.default
  AND pg_catalog.pg_table_is_visible(c.oid)
ORDER BY 2, 3;

-- expect: allow # psql -E \d+ users (PostgreSQL 15 psql), query 2
SELECT c.relchecks, c.relkind, c.relhasindex, c.relhasrules, c.relhastriggers, c.relrowsecurity, c.relforcerowsecurity, false AS relhasoids, c.relispartition, pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')
, c.reltablespace, CASE WHEN c.reloftype = 0 THEN '' ELSE c.reloftype::pg_catalog.regtype::pg_catalog.text END, c.relpersistence, c.relreplident, am.amname
FROM pg_catalog.pg_class c
 LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)
LEFT JOIN pg_catalog.pg_am am ON (c.relam = am.oid)
WHERE c.oid = '16385';

-- expect: allow # psql -E \d+ users (PostgreSQL 15 psql), query 3
SELECT a.attname,
  pg_catalog.format_type(a.atttypid, a.atttypmod),
  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)
   FROM pg_catalog.pg_attrdef d
   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
  a.attnotnull,
  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t
   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation,
  a.attidentity,
  a.attgenerated,
  a.attstorage,
  a.attcompression AS attcompression,
  CASE WHEN a.attstattarget=-1 THEN NULL ELSE a.attstattarget END AS attstattarget,
  pg_catalog.col_description(a.attrelid, a.attnum)
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = '16385' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;

-- expect: allow # psql -E \d+ users (PostgreSQL 15 psql), query 4
SELECT c2.relname, i.indisprimary, i.indisunique, i.indisclustered, i.indisvalid, pg_catalog.pg_get_indexdef(i.indexrelid, 0, true),
  pg_catalog.pg_get_constraintdef(con.oid, true), contype, condeferrable, condeferred, i.indisreplident, c2.reltablespace
FROM pg_catalog.pg_class c, pg_catalog.pg_class c2, pg_catalog.pg_index i
  LEFT JOIN pg_catalog.pg_constraint con ON (conrelid = i.indrelid AND conindid = i.indexrelid AND contype IN ('p','u','x'))
WHERE c.oid = '16385' AND c.oid = i.indrelid AND i.indexrelid = c2.oid
ORDER BY i.indisprimary DESC, c2.relname;

-- expect: allow # psql -E \d+ users (PostgreSQL 15 psql), query 5
SELECT true as sametable, conname,
  pg_catalog.pg_get_constraintdef(r.oid, true) as condef,
  conrelid::pg_catalog.regclass AS ontable
FROM pg_catalog.pg_constraint r
WHERE r.conrelid = '16385' AND r.contype = 'f'
     AND conparentid = 0
ORDER BY conname

-- expect: allow # psql -E \d+ users (PostgreSQL 15 psql), query 6
SELECT conname, conrelid::pg_catalog.regclass AS ontable,
       pg_catalog.pg_get_constraintdef(oid, true) AS condef
  FROM pg_catalog.pg_constraint c
 WHERE confrelid IN (SELECT pg_catalog.pg_partition_ancestors('16385')
                     UNION ALL VALUES ('16385'::pg_catalog.regclass))
       AND contype = 'f' AND conparentid = 0
ORDER BY conname;

-- expect: allow # psql -E \d+ users (PostgreSQL 15 psql), query 7
SELECT pol.polname, pol.polpermissive,
  CASE WHEN pol.polroles = '{0}' THEN NULL ELSE pg_catalog.array_to_string(array(select rolname from pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') END,
  pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),
  pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid),
  CASE pol.polcmd
    WHEN 'r' THEN 'SELECT'
    WHEN 'a' THEN 'INSERT'
    WHEN 'w' THEN 'UPDATE'
    WHEN 'd' THEN 'DELETE'
    END AS cmd
FROM pg_catalog.pg_policy pol
WHERE pol.polrelid = '16385' ORDER BY 1;

-- expect: allow # psql -E \d+ users (PostgreSQL 15 psql), query 8
SELECT oid, stxrelid::pg_catalog.regclass, stxnamespace::pg_catalog.regnamespace::pg_catalog.text AS nsp, stxname,
pg_catalog.pg_get_statisticsobjdef_columns(oid) AS columns,
  'd' = any(stxkind) AS ndist_enabled,
  'f' = any(stxkind) AS deps_enabled,
  'm' = any(stxkind) AS mcv_enabled,
stxstattarget
FROM pg_catalog.pg_statistic_ext
WHERE stxrelid = '16385'
ORDER BY nsp, stxname;

-- expect: allow # psql -E \d+ users (PostgreSQL 15 psql), query 9
SELECT pubname
     , NULL
     , NULL
FROM pg_catalog.pg_publication p
     JOIN pg_catalog.pg_publication_namespace pn ON p.oid = pn.pnpubid
     JOIN pg_catalog.pg_class pc ON pc.relnamespace = pn.pnnspid
WHERE pc.oid ='16385' and pg_catalog.pg_relation_is_publishable('16385')
UNION
SELECT pubname
     , pg_get_expr(pr.prqual, c.oid)
     , (CASE WHEN pr.prattrs IS NOT NULL THEN
         (SELECT string_agg(attname, ', ')
           FROM pg_catalog.generate_series(0, pg_catalog.array_upper(pr.prattrs::pg_catalog.int2[], 1)) s,
                pg_catalog.pg_attribute
          WHERE attrelid = pr.prrelid AND attnum = prattrs[s])
        ELSE NULL END) FROM pg_catalog.pg_publication p
     JOIN pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid
     JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
WHERE pr.prrelid = '16385'
UNION
SELECT pubname
     , NULL
     , NULL
FROM pg_catalog.pg_publication p
WHERE p.puballtables AND pg_catalog.pg_relation_is_publishable('16385')
ORDER BY 1;

-- expect: allow # psql -E \d+ users (PostgreSQL 15 psql), query 10
SELECT t.tgname, pg_catalog.pg_get_triggerdef(t.oid, true), t.tgenabled, t.tgisinternal,
  CASE WHEN t.tgparentid != 0 THEN
    (SELECT u.tgrelid::pg_catalog.regclass
     FROM pg_catalog.pg_trigger AS u,
          pg_catalog.pg_partition_ancestors(t.tgrelid) WITH ORDINALITY AS a(relid, depth)
     WHERE u.tgname = t.tgname AND u.tgrelid = a.relid
           AND u.tgparentid = 0
     ORDER BY a.depth LIMIT 1)
  END AS parent
FROM pg_catalog.pg_trigger t
WHERE t.tgrelid = '16385' AND (NOT t.tgisinternal OR (t.tgisinternal AND t.tgenabled = 'D'))
ORDER BY 1;

-- expect: allow # psql -E \d+ users (PostgreSQL 15 psql), query 11
SELECT c.oid::pg_catalog.regclass
FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i
WHERE c.oid = i.inhparent AND i.inhrelid = '16385'
  AND c.relkind != 'p' AND c.relkind != 'I'
ORDER BY inhseqno;

-- expect: allow # psql -E \d+ users (PostgreSQL 15 psql), query 12
SELECT c.oid::pg_catalog.regclass, c.relkind, inhdetachpending, pg_catalog.pg_get_expr(c.relpartbound, c.oid)
FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i
WHERE c.oid = i.inhrelid AND i.inhparent = '16385'
ORDER BY pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', c.oid::pg_catalog.regclass::pg_catalog.text;

-- expect: allow # psql -E \df (PostgreSQL 15 psql), query 1
SELECT n.nspname as "Schema",
  p.proname as "Name",
  pg_catalog.pg_get_function_result(p.oid) as "Result data type",
  pg_catalog.pg_get_function_arguments(p.oid) as "Argument data types",
 CASE p.prokind
  WHEN 'a' THEN 'agg'
  WHEN 'w' THEN 'window'
  WHEN 'p' THEN 'proc'
  ELSE 'func'
 END as "Type"
FROM pg_catalog.pg_proc p
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE pg_catalog.pg_function_is_visible(p.oid)
      AND n.nspname <> 'pg_catalog'
      AND n.nspname <> 'information_schema'
ORDER BY 1, 2, 4;

-- expect: allow # psql -E \dn (PostgreSQL 15 psql), query 1
SELECT n.nspname AS "Name",
  pg_catalog.pg_get_userbyid(n.nspowner) AS "Owner"
FROM pg_catalog.pg_namespace n
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
ORDER BY 1;

-- expect: allow # psql -E \du (PostgreSQL 15 psql), query 1
SELECT r.rolname, r.rolsuper, r.rolinherit,
  r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
  r.rolconnlimit, r.rolvaliduntil,
  ARRAY(SELECT b.rolname
        FROM pg_catalog.pg_auth_members m
        JOIN pg_catalog.pg_roles b ON (m.roleid = b.oid)
        WHERE m.member = r.oid) as memberof
, r.rolreplication
, r.rolbypassrls
FROM pg_catalog.pg_roles r
WHERE r.rolname !~ '^pg_'
ORDER BY 1;

-- expect: allow # psql -E \l (PostgreSQL 15 psql), query 1
SELECT d.datname as "Name",
       pg_catalog.pg_get_userbyid(d.datdba) as "Owner",
       pg_catalog.pg_encoding_to_char(d.encoding) as "Encoding",
       d.datcollate as "Collate",
       d.datctype as "Ctype",
       d.daticulocale as "ICU Locale",
       CASE d.datlocprovider WHEN 'c' THEN 'libc' WHEN 'i' THEN 'icu' END AS "Locale Provider",
       pg_catalog.array_to_string(d.datacl, E'\n') AS "Access privileges"
FROM pg_catalog.pg_database d
ORDER BY 1;

-- expect: allow # psql -E \dx (PostgreSQL 15 psql), query 1
SELECT e.extname AS "Name", e.extversion AS "Version", n.nspname AS "Schema", c.description AS "Description"
FROM pg_catalog.pg_extension e LEFT JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace LEFT JOIN pg_catalog.pg_description c ON c.objoid = e.oid AND c.classoid = 'pg_catalog.pg_extension'::pg_catalog.regclass
ORDER BY 1;

-- expect: allow # psql -E \dt public.* (PostgreSQL 15 psql), query 1
SELECT n.nspname as "Schema",
  c.relname as "Name",
  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 't' THEN 'TOAST table' WHEN 'f' THEN 'foreign table' WHEN 'p' THEN 'partitioned table' WHEN 'I' THEN 'partitioned index' END as "Type",
  pg_catalog.pg_get_userbyid(c.relowner) as "Owner"
FROM pg_catalog.pg_class c
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
WHERE c.relkind IN ('r','p','t','s','')
  AND n.nspname OPERATOR(pg_catalog.~) '^(public)$' COLLATE pg_catalog.default
ORDER BY 1,2;

