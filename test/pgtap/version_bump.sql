-- pgTAP: what a bump of a student's cache version reads and writes (extension/version_ring.c).
-- A student's rows in a newer table of the ring are larger than its rows in an older one, so a
-- bump probes the current table, then the previous one, then the oldest, and stops at the first
-- that holds a row of the student; it writes into the current table itself, without the
-- partitioned table's slot default (a function call per row). Before, every bump probed all
-- three tables and called kc_flow.version_slot() once per row.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(6);
SET LOCAL track_functions = 'all';  -- version_slot() is C

-- the generation sequence is not transactional: kept here and set back at the end
CREATE TEMP TABLE saved_generation AS SELECT last_value, is_called FROM kc_flow.version_generation;

INSERT INTO kc_flow.students (id, display_name, timezone)
SELECT ('00000000-0000-0000-0000-0000000b0b0' || i)::uuid, 'Student ' || i, 'Europe/Berlin' FROM generate_series(1, 4) i;

-- generation 5: the current table is student_versions_2, the previous _1, the oldest _0.
-- Student 1 has rows in all three, student 2 in the previous and the oldest, student 3 in the
-- oldest only, student 4 none; each newer table's row larger, as bumps and rotations leave them.
DO $$ BEGIN PERFORM setval('kc_flow.version_generation', 5); END $$;
INSERT INTO kc_flow.student_versions (student_id, version, slot) VALUES
    ('00000000-0000-0000-0000-0000000b0b01', 3, 0), ('00000000-0000-0000-0000-0000000b0b01', 5, 1),
    ('00000000-0000-0000-0000-0000000b0b01', 7, 2),
    ('00000000-0000-0000-0000-0000000b0b02', 2, 0), ('00000000-0000-0000-0000-0000000b0b02', 4, 1),
    ('00000000-0000-0000-0000-0000000b0b03', 9, 0);

-- the versions' tables' index scans and inserts, and version_slot()'s calls, in this transaction
CREATE TEMP VIEW version_reads AS
SELECT array_agg(coalesce(t.idx_scan, 0) ORDER BY t.relname) AS scans,
       array_agg(t.n_tup_ins ORDER BY t.relname) AS ins,
       (SELECT coalesce(sum(f.calls), 0) FROM pg_stat_xact_user_functions f
         WHERE f.schemaname = 'kc_flow' AND f.funcname = 'version_slot')::bigint AS slot_calls
  FROM pg_stat_xact_user_tables t
 WHERE t.schemaname = 'kc_flow' AND t.relname IN ('student_versions_0', 'student_versions_1', 'student_versions_2');

CREATE TEMP TABLE seen (student int, version bigint, scans bigint[], ins bigint[], slot_calls bigint);
DO $$
DECLARE
    before record;
    after record;
    new_id bigint;
BEGIN
    FOR s IN 1..4 LOOP
        SELECT * INTO before FROM version_reads;
        new_id := kc_flow.emit_event('VIEWS_REFRESHED', ('00000000-0000-0000-0000-0000000b0b0' || s)::uuid,
                                     ('00000000-0000-0000-0000-0000000b0b0' || s)::uuid, '{}');
        SELECT * INTO after FROM version_reads;
        INSERT INTO seen
        SELECT s, (SELECT e.version FROM kc_flow.events e WHERE e.id = new_id),
               ARRAY[after.scans[1] - before.scans[1], after.scans[2] - before.scans[2], after.scans[3] - before.scans[3]],
               ARRAY[after.ins[1] - before.ins[1], after.ins[2] - before.ins[2], after.ins[3] - before.ins[3]],
               after.slot_calls - before.slot_calls;
    END LOOP;
END
$$;

SELECT is((SELECT array_agg(s.version ORDER BY s.student) FROM seen s), ARRAY[8, 5, 10, 1]::bigint[],
          'each bump gives the student''s largest version plus one, 1 for a student without one');
SELECT is((SELECT s.scans FROM seen s WHERE s.student = 1), ARRAY[0, 0, 1]::bigint[],
          'a student with a row in the current table: only that table is probed');
SELECT is((SELECT s.scans FROM seen s WHERE s.student = 2), ARRAY[0, 1, 1]::bigint[],
          'a student whose newest row is in the previous table: the oldest is not probed');
SELECT is((SELECT array_agg(s.scans ORDER BY s.student) FROM seen s WHERE s.student IN (3, 4)),
          ARRAY[[1, 1, 1], [1, 1, 1]]::bigint[],
          'a student with a row in the oldest table only, or none: all three are probed');
SELECT is((SELECT array_agg(s.ins ORDER BY s.student) FROM seen s),
          ARRAY[[0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 1]]::bigint[],
          'every bump inserts its row into the current table');
SELECT is((SELECT sum(s.slot_calls) FROM seen s), 0::numeric,
          'no bump calls the slot default version_slot()');

DO $$ BEGIN PERFORM setval('kc_flow.version_generation', g.last_value, g.is_called) FROM saved_generation g; END $$;
SELECT * FROM finish();
ROLLBACK;
