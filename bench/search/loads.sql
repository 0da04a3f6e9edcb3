-- bench/search/loads.sql: loads 0-5 on the course's trainers, for the search benchmarks
-- (run.sh, auto_assign_cpu.sh): one student, payment, purchase and approved allocation per
-- place taken, a random number of places per trainer (the caller seeds random()).
-- Needs :'starts_on', the first day of the payments' time slot.
CREATE TEMP TABLE places AS
SELECT t.id AS trainer_id, gen_random_uuid() AS student_id, gen_random_uuid() AS payment_id
  FROM kc_flow.trainers t, LATERAL generate_series(1, floor(random() * 6)::int + 0 * length(t.display_name));
INSERT INTO kc_flow.students (id, display_name) SELECT student_id, 'S' FROM places;
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents)
SELECT payment_id, student_id, '00000000-0000-0000-0000-00000000c0de', 10,
       jsonb_build_object('weekdays', jsonb_build_array(1), 'start', '10:00', 'timezone', 'UTC',
                          'starts_on', :'starts_on'), 100 FROM places;
INSERT INTO kc_flow.student_course_purchases (payment_id, student_id, course_id, purchase_tier)
SELECT payment_id, student_id, '00000000-0000-0000-0000-00000000c0de', 10 FROM places;
INSERT INTO kc_flow.trainer_allocations (purchase_id, student_id, course_id, trainer_id, status, allocated_at)
SELECT pu.id, pu.student_id, pu.course_id, p.trainer_id, 'approved', now()
  FROM places p JOIN kc_flow.student_course_purchases pu ON pu.payment_id = p.payment_id;
