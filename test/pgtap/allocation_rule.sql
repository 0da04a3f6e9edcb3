-- pgTAP: the allocation stage chooses what the rule chooses (docs/design.md §4,
-- extension/stage_allocation.c), compared purchase by purchase with a reference written
-- plainly in SQL: the course's active trainers with a free place (approved and active
-- allocations below max_active_students), by load then id, the first with no booking
-- overlapping a planned session and a window of its own (in its own zone) around each.
-- Varied data: trainers in five zones with random windows, capacities and starting loads,
-- some inactive or of another course; 240 purchases whose slots collide (few start times),
-- cross daylight saving changes and midnights, with and without starts_on; each allocation
-- books the trainer, so later purchases meet its bookings and its new load; every 30
-- purchases trainers gain places, are deactivated or activated, leave or join the course.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(3);
SET LOCAL client_min_messages = warning;

SELECT setseed(0.31);
INSERT INTO kc_flow.courses (id, title, session_minutes, is_published) VALUES
    ('00000000-0000-0000-0000-0000000ca111', 'Rule', 45, true),
    ('00000000-0000-0000-0000-0000000ca112', 'Other', 60, true);
INSERT INTO kc_flow.trainers (id, display_name, timezone, max_active_students, is_active)
SELECT md5('rule trainer ' || i)::uuid, 'Trainer ' || i,
       (ARRAY['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata', 'Pacific/Chatham'])[1 + i % 5],
       2 + (random() * 6)::int, random() > 0.1
  FROM generate_series(1, 48) i;
INSERT INTO kc_flow.trainer_courses
SELECT id, CASE WHEN i % 8 = 0 THEN '00000000-0000-0000-0000-0000000ca112'::uuid ELSE '00000000-0000-0000-0000-0000000ca111' END
  FROM (SELECT id, row_number() OVER (ORDER BY display_name) AS i FROM kc_flow.trainers) t;
-- windows: most weekdays, from 05:00-12:00 for 6-18 hours (to 24:00 at most), sometimes two
INSERT INTO kc_flow.trainer_availability (trainer_id, weekday, start_time, end_time)
SELECT id, d, make_time(h, 0, 0), (least(h + len, 24) || ':00')::time
  FROM (SELECT t.id, d.d, 5 + (random() * 7)::int AS h, 6 + (random() * 12)::int AS len
          FROM kc_flow.trainers t, generate_series(1, 7) d, generate_series(1, 2) k
         WHERE random() < CASE k WHEN 1 THEN 0.8 ELSE 0.2 END) w;

-- starting loads: 0-3 approved allocations (without bookings) per trainer
CREATE TEMP TABLE places AS
SELECT t.id AS trainer_id, gen_random_uuid() AS student_id, gen_random_uuid() AS payment_id
  FROM kc_flow.trainers t, LATERAL generate_series(1, (random() * 3)::int + 0 * length(t.display_name));
INSERT INTO kc_flow.students (id, display_name) SELECT student_id, 'S' FROM places;
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents)
SELECT payment_id, student_id, '00000000-0000-0000-0000-0000000ca111', 10,
       '{"weekdays":[1],"start":"10:00","timezone":"UTC","starts_on":"2040-01-01"}', 100 FROM places;
INSERT INTO kc_flow.student_course_purchases (payment_id, student_id, course_id, purchase_tier)
SELECT payment_id, student_id, '00000000-0000-0000-0000-0000000ca111', 10 FROM places;
INSERT INTO kc_flow.trainer_allocations (purchase_id, student_id, course_id, trainer_id, status, allocated_at)
SELECT pu.id, pu.student_id, pu.course_id, p.trainer_id, 'approved', now()
  FROM places p JOIN kc_flow.student_course_purchases pu ON pu.payment_id = p.payment_id;

-- the purchases to allocate, in order
CREATE TEMP TABLE wanted AS
SELECT g, gen_random_uuid() AS student_id, gen_random_uuid() AS payment_id,
       jsonb_build_object('weekdays', (SELECT jsonb_agg(d) FROM (SELECT DISTINCT 1 + (random() * 6 + 0 * g)::int AS d
                                                                 FROM generate_series(1, 1 + (random() * 2)::int)) w),
                          'start', (ARRAY['06:00', '09:30', '12:00', '18:15', '23:30'])[1 + (random() * 4)::int],
                          'timezone', (ARRAY['Europe/Berlin', 'UTC', 'America/New_York', 'Asia/Kolkata'])[1 + (random() * 3)::int])
       || CASE WHEN random() < 0.8
               THEN jsonb_build_object('starts_on', (ARRAY['2031-03-24', '2031-10-20', '2031-01-06'])[1 + (random() * 2)::int])
               ELSE '{}' END AS slot,
       (ARRAY[10, 10, 20, 30])[1 + (random() * 3)::int] AS tier
  FROM generate_series(1, 240) g;
INSERT INTO kc_flow.students (id, display_name) SELECT student_id, 'W' FROM wanted;
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents)
SELECT payment_id, student_id, '00000000-0000-0000-0000-0000000ca111', tier, slot, 100 FROM wanted;
INSERT INTO kc_flow.student_course_purchases (payment_id, student_id, course_id, purchase_tier)
SELECT payment_id, student_id, '00000000-0000-0000-0000-0000000ca111', tier FROM wanted ORDER BY g;

-- the rule, plainly: every trainer of the course counted and checked, the first in order
CREATE FUNCTION pg_temp.reference(purchase uuid) RETURNS uuid LANGUAGE sql STABLE AS $$
    WITH pl AS (SELECT * FROM kc_flow.purchase_plan(purchase)),
    ranked AS (
        SELECT t.id, t.timezone, t.max_active_students,
               (SELECT count(*) FROM kc_flow.trainer_allocations a
                 WHERE a.trainer_id = t.id AND a.status IN ('approved', 'active')) AS load
          FROM kc_flow.trainers t
          JOIN kc_flow.trainer_courses tc ON tc.trainer_id = t.id
          JOIN kc_flow.student_course_purchases pu ON pu.course_id = tc.course_id AND pu.id = purchase
         WHERE t.is_active)
    SELECT r.id FROM ranked r
     WHERE r.load < r.max_active_students
       AND NOT EXISTS (SELECT 1 FROM kc_flow.trainer_bookings b, pl
                        WHERE b.trainer_id = r.id AND b.during && tstzmultirange(tstzrange(pl.starts_at, pl.ends_at)))
       AND NOT EXISTS (SELECT 1 FROM pl
                        WHERE NOT EXISTS (
                          SELECT 1 FROM kc_flow.trainer_availability av
                           WHERE av.trainer_id = r.id
                             AND av.weekday = extract(isodow FROM pl.starts_at AT TIME ZONE r.timezone)
                             AND av.start_time <= (pl.starts_at AT TIME ZONE r.timezone)::time
                             AND pl.ends_at AT TIME ZONE r.timezone
                                 <= (pl.starts_at AT TIME ZONE r.timezone)::date + av.end_time))
     ORDER BY r.load, r.id
     LIMIT 1
$$;

CREATE TEMP TABLE chosen (g int, expected uuid, got uuid);
DO $$
DECLARE
    w record;
    pu uuid;
    expected uuid;
BEGIN
    FOR w IN SELECT * FROM wanted ORDER BY g LOOP
        -- every 30 purchases the trainers change: one more place for three, one deactivated,
        -- one activated, one leaves the course and one joins it (the search must see it all)
        IF w.g % 30 = 0 THEN
            UPDATE kc_flow.trainers SET max_active_students = max_active_students + 1
             WHERE id IN (SELECT id FROM kc_flow.trainers ORDER BY md5(id::text || w.g) LIMIT 3);
            UPDATE kc_flow.trainers SET is_active = NOT is_active
             WHERE id IN (SELECT id FROM kc_flow.trainers ORDER BY md5(id::text || w.g) OFFSET 3 LIMIT 2);
            DELETE FROM kc_flow.trainer_courses
             WHERE (trainer_id, course_id) IN (SELECT trainer_id, course_id FROM kc_flow.trainer_courses
                                                WHERE course_id = '00000000-0000-0000-0000-0000000ca111'
                                                ORDER BY md5(trainer_id::text || w.g) LIMIT 1);
            INSERT INTO kc_flow.trainer_courses
            SELECT t.id, '00000000-0000-0000-0000-0000000ca111' FROM kc_flow.trainers t
             WHERE NOT EXISTS (SELECT 1 FROM kc_flow.trainer_courses tc
                                WHERE tc.trainer_id = t.id AND tc.course_id = '00000000-0000-0000-0000-0000000ca111')
             ORDER BY md5(t.id::text || w.g) LIMIT 1;
        END IF;
        SELECT id INTO pu FROM kc_flow.student_course_purchases WHERE payment_id = w.payment_id;
        expected := pg_temp.reference(pu);
        INSERT INTO chosen VALUES (w.g, expected, kc_flow.auto_assign(pu));
    END LOOP;
END;
$$;

SELECT is((SELECT array_agg(format('purchase %s: %s, the rule: %s', g, coalesce(got::text, 'nobody'),
                                   coalesce(expected::text, 'nobody')) ORDER BY g)
             FROM chosen WHERE got IS DISTINCT FROM expected),
          NULL, '240 purchases: each given the trainer the rule chooses, or nobody when it chooses nobody');
SELECT ok((SELECT count(got) >= 100 AND count(*) - count(got) >= 10 AND count(DISTINCT got) >= 20 FROM chosen),
          'the purchases are varied: at least 100 allocated, to 20 trainers or more, and 10 left pending');
SELECT ok((SELECT count(DISTINCT t.timezone) = 5 FROM chosen c JOIN kc_flow.trainers t ON t.id = c.got),
          'trainers of every zone were chosen');

SELECT * FROM finish();
ROLLBACK;
