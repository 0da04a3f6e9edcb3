\set n random(1, :students)
SELECT kc_flow.student_home(id) FROM bench_ids WHERE n = :n;
