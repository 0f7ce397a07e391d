-- A GIN index on `_id` for every FerretDB 1.x collection table of this database.
--
-- FerretDB 1.x (PostgreSQL backend) keeps a collection as a table with one `_jsonb` column and
-- its `_id` index as a btree on `(_jsonb->'_id')`, but pushes an `_id` equality down as
-- `_jsonb->'_id' @> value`, which a btree cannot serve: every update or find by `_id` then scans
-- the whole table. A GIN index with `jsonb_path_ops` on the same expression serves `@>`, so
-- those statements become index lookups (updates by `_id` on 20,000 documents: 44-82/s without,
-- 198-636/s with; plans from Seq Scan to Bitmap Index Scan).
--
-- The event trigger adds the index to each collection table as FerretDB creates it (in the same
-- transaction), and the statement at the end adds it to the tables that already exist. FerretDB
-- does not list the index (its own metadata does not name it); it goes when the table is dropped.
-- Run by scripts/stack.sh on the `ferretdb` database; idempotent.

CREATE OR REPLACE FUNCTION public.xclog_ferretdb_id_gin(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    rel pg_class%ROWTYPE;
BEGIN
    SELECT * INTO rel FROM pg_class WHERE oid = tbl;
    IF rel.relkind <> 'r' OR rel.relname LIKE '\_ferretdb\_%' THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = tbl AND attname = '_jsonb' AND NOT attisdropped) THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s USING gin ((_jsonb -> ''_id'') jsonb_path_ops)',
                   left(rel.relname, 50) || '_id_gin', tbl);
END
$fn$;

CREATE OR REPLACE FUNCTION public.xclog_ferretdb_id_gin_on_create() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    cmd record;
BEGIN
    FOR cmd IN SELECT objid FROM pg_event_trigger_ddl_commands()
               WHERE command_tag = 'CREATE TABLE' AND object_type = 'table' LOOP
        PERFORM public.xclog_ferretdb_id_gin(cmd.objid::regclass);
    END LOOP;
END
$fn$;

DROP EVENT TRIGGER IF EXISTS xclog_ferretdb_id_gin;
CREATE EVENT TRIGGER xclog_ferretdb_id_gin ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION public.xclog_ferretdb_id_gin_on_create();

SELECT public.xclog_ferretdb_id_gin(c.oid)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND EXISTS (SELECT 1 FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attname = '_jsonb' AND NOT a.attisdropped);
