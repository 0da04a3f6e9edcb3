-- pgTAP: a student's cache version without in-place updates (issue 9, extension/version_ring.c).
-- A bump inserts a row of the versions' ring and updates none; the version is the largest row,
-- and survives rotations of the ring (each student's largest version carried forward before its
-- table is truncated), never going backwards. (0.1.0 updated the student's cache_versions row.)
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(11);

INSERT INTO kc_flow.students (id, display_name, timezone)
SELECT ('00000000-0000-0000-0000-0000000a5e0' || i)::uuid, 'Student ' || i, 'Europe/Berlin' FROM generate_series(1, 3) i;

-- the version tables' writes in this transaction: 0.1.0's table cache_versions, or the ring's
CREATE TEMP VIEW version_writes AS
SELECT coalesce(sum(n_tup_ins), 0)::bigint AS ins, coalesce(sum(n_tup_upd + n_tup_hot_upd), 0)::bigint AS upd
  FROM pg_stat_xact_user_tables WHERE schemaname = 'kc_flow' AND relname ~ '^(cache_versions|student_versions)';

-- student 1 gets three events, student 2 one, student 3 none
SELECT kc_flow.emit_event('VIEWS_REFRESHED', s.id, s.id, '{}')
  FROM (VALUES (1), (2), (1), (1)) n(i)
  JOIN kc_flow.students s ON s.id = ('00000000-0000-0000-0000-0000000a5e0' || n.i)::uuid;

SELECT is((SELECT ARRAY[w.ins, w.upd] FROM version_writes w), ARRAY[4, 0]::bigint[],
          'emit_event: one new version row per bump, no row updated');
SELECT is((SELECT array_agg(e.version ORDER BY e.id) FROM kc_flow.events e
            WHERE e.student_id = '00000000-0000-0000-0000-0000000a5e01'),
          ARRAY[1, 2, 3]::bigint[], 'the versions of student 1''s events rise by one per event');
SELECT is(ARRAY[kc_flow.student_version('00000000-0000-0000-0000-0000000a5e01'),
                kc_flow.student_version('00000000-0000-0000-0000-0000000a5e02'),
                kc_flow.student_version('00000000-0000-0000-0000-0000000a5e03')],
          ARRAY[3, 1, 0]::bigint[], 'student_version(): the largest row, 0 before the first event');
SELECT is((SELECT array_agg(c.student_id::text || ' ' || c.version ORDER BY c.student_id) FROM kc_flow.cache_versions c
            WHERE c.student_id::text LIKE '00000000-0000-0000-0000-0000000a5e0%'),
          ARRAY['00000000-0000-0000-0000-0000000a5e01 3', '00000000-0000-0000-0000-0000000a5e02 1'],
          'the view cache_versions: one row per student with its version');

-- Six tries to rotate, each after one more event of student 1; student 2's only version is
-- carried forward whenever its table is the oldest. After each, both students' versions as
-- seen by the read side, and by the view; before each, the updates of the version tables
-- (a TRUNCATE zeroes a table's counts in pg_stat_xact_user_tables).
SET LOCAL kc_flow.version_rotation_rows = 0;   -- rotate as soon as the rule of twice the carried rows allows
CREATE TEMP TABLE seen (step int, upd bigint, rotated text, v1 bigint, v2 bigint, home1 bigint, view2 bigint);
DO $$
DECLARE
    rotated text;
    upd bigint;
BEGIN
    FOR step IN 1..6 LOOP
        PERFORM kc_flow.emit_event('VIEWS_REFRESHED', '00000000-0000-0000-0000-0000000a5e01',
                                   '00000000-0000-0000-0000-0000000a5e01', '{}');
        upd := (SELECT w.upd FROM version_writes w);
        rotated := kc_flow.rotate_versions();
        INSERT INTO seen
        SELECT step, upd, rotated,
               kc_flow.student_version('00000000-0000-0000-0000-0000000a5e01'),
               kc_flow.student_version('00000000-0000-0000-0000-0000000a5e02'),
               (kc_flow.student_home('00000000-0000-0000-0000-0000000a5e01')->>'version')::bigint,
               (SELECT c.version FROM kc_flow.cache_versions c WHERE c.student_id = '00000000-0000-0000-0000-0000000a5e02');
    END LOOP;
END
$$;
SELECT is((SELECT array_agg(s.rotated ORDER BY s.step) FROM seen s),
          ARRAY['rotated', 'rotated', 'rotated', 'not due', 'rotated', 'rotated'],
          'five rotations: the one after the first carried row waits for two new rows');
SELECT is((SELECT last_value FROM kc_flow.version_generation), 5::bigint, 'the ring went round more than once');
SELECT is((SELECT array_agg(s.v1 ORDER BY s.step) FROM seen s), ARRAY[4, 5, 6, 7, 8, 9]::bigint[],
          'student 1: one more per event across the rotations, never backwards');
SELECT is((SELECT array_agg(s.home1 ORDER BY s.step) FROM seen s), ARRAY[4, 5, 6, 7, 8, 9]::bigint[],
          'student_home shows the same versions');
SELECT is((SELECT array_agg(ARRAY[s.v2, s.view2] ORDER BY s.step) FROM seen s),
          ARRAY[[1, 1], [1, 1], [1, 1], [1, 1], [1, 1], [1, 1]]::bigint[],
          'student 2, without events: its version survives every rotation, in student_version() and the view');
SELECT is((SELECT array_agg(r.carried ORDER BY r.generation) FROM kc_flow.version_rotations r WHERE r.generation > 0),
          ARRAY[0, 0, 1, 0, 1]::bigint[],
          'a rotation carries forward only the students whose largest version is in the oldest table alone');
SELECT is((SELECT array_agg(s.upd ORDER BY s.step) FROM seen s), ARRAY[0, 0, 0, 0, 0, 0]::bigint[],
          'no bump between the rotations updated a row');

SELECT * FROM finish();
ROLLBACK;
