-- pgTAP: a handled queue row is deleted by the batch's transaction itself, so its dead
-- version carries a plain transaction id as xmax, not a multixact.  A row locked by the
-- claim (FOR UPDATE, the batch's transaction) and deleted by the job's subtransaction got
-- a multixact, and under a held xmin horizon every claim walked such dead rows, each
-- visibility check a multixact lookup (docs/extension.md, "Storage under a held horizon").
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS pageinspect;
SELECT plan(3);

INSERT INTO kc_flow.students (id, display_name) VALUES ('00000000-0000-0000-0000-00000000a101', 'Dead rows');
INSERT INTO kc_flow.courses (id, title, is_published) VALUES ('00000000-0000-0000-0000-00000000a102', 'Plain xmax', true);
INSERT INTO kc_flow.payments (id, student_id, course_id, purchase_tier, time_slot, amount_cents) VALUES
  ('00000000-0000-0000-0000-00000000a104', '00000000-0000-0000-0000-00000000a101', '00000000-0000-0000-0000-00000000a102',
   10, '{"weekdays":[2],"start":"10:00","timezone":"UTC","starts_on":"2031-01-01"}', 100),
  ('00000000-0000-0000-0000-00000000a105', '00000000-0000-0000-0000-00000000a101', '00000000-0000-0000-0000-00000000a102',
   20, '{"weekdays":[3],"start":"11:00","timezone":"UTC","starts_on":"2031-01-01"}', 100);
-- two confirmations: the purchase stage runs them as a set (one subtransaction), the
-- allocation stage each on its own (its own subtransaction)
UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = '00000000-0000-0000-0000-00000000a104';
UPDATE kc_flow.payments SET status = 'succeeded' WHERE id = '00000000-0000-0000-0000-00000000a105';
SELECT ok(kc_flow.run_pending(10) >= 2, 'the confirmations are handled');

-- every tuple version on the queue's pages, dead ones included (nothing prunes them:
-- the transaction that deleted them is this one)
CREATE TEMP VIEW queue_versions AS
SELECT v.t_xmax, v.t_infomask
  FROM pg_inherits i
 CROSS JOIN LATERAL generate_series(0, (pg_relation_size(i.inhrelid) / 8192)::int - 1) AS b(blk)
 CROSS JOIN LATERAL heap_page_items(get_raw_page(i.inhrelid::regclass::text, b.blk)) v
 WHERE i.inhparent = 'kc_flow.event_queue'::regclass AND v.t_xmax <> 0;

SELECT ok((SELECT count(*) FROM queue_versions) >= 2, 'the handled queue rows are still on their pages, deleted');
-- 4096: HEAP_XMAX_IS_MULTI (access/htup_details.h)
SELECT is((SELECT count(*) FROM queue_versions WHERE t_infomask & 4096 <> 0), 0::bigint,
          'no deleted queue row has a multixact as its xmax');

SELECT * FROM finish();
ROLLBACK;
