-- bench/notify/setup.sql: one published course and one student per pgbench client
-- (student n is ...-00000000000n, so that clients never wait for each other's
-- student's cache version lock), for the checkout transaction of confirm.sql.
SET client_min_messages = warning;
INSERT INTO kc_flow.courses (id, title, is_published)
VALUES ('00000000-0000-4000-8000-00000000c001', 'Notify bench', true);
INSERT INTO kc_flow.students (id, display_name)
SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, 'Client ' || n
  FROM generate_series(0, 63) n;
