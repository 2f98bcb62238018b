-- 002_app_schema.sql: example application schema, with per-tenant row level
-- security.
--
-- Run AS THE MIGRATOR ROLE in the target database, after 001_roles.sql, so
-- the default privileges set up there grant the new table and sequence to
-- the runtime (and service) role:
--
--   PGPASSWORD=... psql -X -v ON_ERROR_STOP=1 -U app_migrator -d app \
--        -f migrations/002_app_schema.sql
--
-- Re-runnable: the table is created only when missing, the policy is
-- replaced, and seed rows are inserted only into an empty table.

\set ON_ERROR_STOP on
-- Silence "already exists, skipping" notices on re-runs.
SET client_min_messages = warning;

-- Default privileges are per creating role: a table created by a superuser
-- would not be granted to the runtime role.
DO $$
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    RAISE EXCEPTION '002_app_schema.sql must be run as the migrator role, not as superuser %', current_user;
  END IF;
END
$$;

BEGIN;

CREATE TABLE IF NOT EXISTS public.notes (
  id     bigserial PRIMARY KEY,
  tenant text NOT NULL,
  body   text NOT NULL
);

-- ENABLE but not FORCE: the migrator owns the table and keeps seeing every
-- row; the runtime role sees only its tenant's rows.
ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;

-- current_setting(..., true) is NULL when app.tenant was never set, and ''
-- after RESET ALL (a reused upstream session: the placeholder survives), so
-- NULLIF makes both mean "no tenant": such a session sees and may write nothing.
DROP POLICY IF EXISTS notes_tenant_isolation ON public.notes;
CREATE POLICY notes_tenant_isolation ON public.notes
  USING (tenant = NULLIF(current_setting('app.tenant', true), ''))
  WITH CHECK (tenant = NULLIF(current_setting('app.tenant', true), ''));

INSERT INTO public.notes (tenant, body)
SELECT v.tenant, v.body
  FROM (VALUES
    ('acme',   'Order more anvils'),
    ('acme',   'Road runner sighted near mesa'),
    ('acme',   'Rocket skates: return for refund'),
    ('globex', 'Hammock district expansion plan'),
    ('globex', 'Quarterly doomsday device review')
  ) AS v(tenant, body)
 WHERE NOT EXISTS (SELECT FROM public.notes);

COMMIT;
