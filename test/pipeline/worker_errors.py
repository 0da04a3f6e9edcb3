"""Workers go on after rounds that cannot run.

1. Read-only: with default_transaction_read_only on (a failover tool keeps a
   promoted node so for a few seconds; pg_autoctl does) the workers wait
   without failing a round, and the payment confirmed meanwhile completes
   once the database is writable again.
2. Repeated failed rounds: with kc_flow.events locked by another session
   and lock_timeout set, every round's claim fails. After the second such
   error the worker used to loop for ever inside the error machinery (its
   error context stack still named frames of the failed round). Once the
   lock is gone the payment confirmed meanwhile must complete.
3. A server-wide default_transaction_isolation of REPEATABLE READ does not
   reach the workers (their rounds read the log head after its lock, which an
   older transaction snapshot would not see): every stage runs READ COMMITTED
   and concurrent payments complete.
4. A batch whose round of the log fails (lock_timeout while another session
   holds the log head) still commits its stages' effects, and its events get
   their positions once the head is free again."""
import time

from kcflow_test import wait_workers, World, connect, run, one, rows, ok, check_invariants, finish


def sessions_of(conn, payment, want, timeout=15):
    deadline = time.time() + timeout
    n = 0
    while time.time() < deadline:
        n = one(conn, """SELECT count(*) FROM kc_flow.tutoring_sessions s
                           JOIN kc_flow.student_course_purchases p ON p.student_id = s.student_id
                          WHERE p.payment_id = %s""", (payment,))
        if n == want:
            break
        time.sleep(0.2)
    return n


def new_session_setting(setting):
    fresh = connect()
    try:
        return one(fresh, "SELECT current_setting(%s)", (setting,))
    finally:
        fresh.close()


server_default = {}


def set_system(conn, setting, value):
    """ALTER SYSTEM, then waits until the reload reached the workers. pg_reload_conf() only
    signals the postmaster, which reloads and then signals its children, the workers among
    them; a new session starts with the postmaster's settings, so once a new session sees the
    value every worker has been signalled and reloads before its next round."""
    if value is None:
        run(conn, "ALTER SYSTEM RESET %s" % setting)
        want = server_default.pop(setting)
    else:
        server_default.setdefault(setting, new_session_setting(setting))
        run(conn, "ALTER SYSTEM SET %s = '%s'" % (setting, value))
        want = value
    one(conn, "SELECT pg_reload_conf()")
    deadline = time.time() + 10
    while new_session_setting(setting) != want:
        if time.time() > deadline:
            raise SystemExit("the server did not reload %s = %s within 10 s" % (setting, want))
        time.sleep(0.05)


conn = connect()
ok(wait_workers(conn), "worker errors: the background workers are attached")
world = World(conn, trainers=2, students=2)
read_only_payment, locked_payment = world.payments(tiers=(10, 10))
rr_world = World(conn, trainers=12, students=12)
rr_payments = rr_world.payments(tiers=(10,) * 12)
head_world = World(conn, trainers=1, students=1)
head_payment, = head_world.payments(tiers=(10,))

set_system(conn, "default_transaction_read_only", "on")
try:
    run(conn, "SET default_transaction_read_only = off")
    one(conn, "SELECT kc_flow.confirm_payment(%s)", (read_only_payment,))
    time.sleep(2.5)
    done = one(conn, "SELECT count(*) FROM kc_flow.student_course_purchases WHERE payment_id = %s",
               (read_only_payment,))
    ok(done == 0, "worker errors: nothing is written while the database is read-only", done)
finally:
    set_system(conn, "default_transaction_read_only", None)
n = sessions_of(conn, read_only_payment, 10)
ok(n == 10, "worker errors: once writable again the workers go on (10 sessions)", n)

holder = connect(autocommit=False)
set_system(conn, "lock_timeout", "100ms")
try:
    run(holder, "SET lock_timeout = 0")
    run(holder, "LOCK TABLE kc_flow.events IN ACCESS EXCLUSIVE MODE")
    time.sleep(3.5)     # three or more failed rounds at the default poll interval of 1 s
    one(holder, "SELECT kc_flow.confirm_payment(%s)", (locked_payment,))
    holder.commit()
finally:
    holder.rollback()
    set_system(conn, "lock_timeout", None)
n = sessions_of(conn, locked_payment, 10)
ok(n == 10, "worker errors: after repeated failed rounds the workers go on (10 sessions)", n)

# the isolation each purchase stage ran in, recorded by a trigger of the test's own
run(conn, "CREATE TABLE public.stage_isolation (level text NOT NULL)")
run(conn, """CREATE FUNCTION public.note_isolation() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO public.stage_isolation VALUES (current_setting('transaction_isolation'));
                   RETURN NULL; END $$""")
run(conn, """CREATE TRIGGER note_isolation AFTER INSERT ON kc_flow.student_course_purchases
             FOR EACH ROW EXECUTE FUNCTION public.note_isolation()""")
set_system(conn, "default_transaction_isolation", "repeatable read")
try:
    time.sleep(1.5)     # the workers reload the configuration
    run(conn, "SET default_transaction_isolation = 'read committed'")
    for p in rr_payments:
        one(conn, "SELECT kc_flow.confirm_payment(%s)", (p,))
    done = [sessions_of(conn, p, 10) for p in rr_payments]
finally:
    set_system(conn, "default_transaction_isolation", None)
    run(conn, "DROP TRIGGER note_isolation ON kc_flow.student_course_purchases")
levels = [r[0] for r in rows(conn, "SELECT level FROM public.stage_isolation")]
ok(len(levels) == len(rr_payments) and set(levels) == {"read committed"},
   "worker errors: with a server default of REPEATABLE READ the stages run READ COMMITTED", levels)
ok(done == [10] * len(rr_payments), "worker errors: ... and the 12 payments completed", done)

after = one(conn, "SELECT kc_flow.log_head()")
head = connect(autocommit=False)
set_system(conn, "lock_timeout", "100ms")
try:
    run(head, "SET lock_timeout = 0")
    one(head, "SELECT count(*) FROM kc_flow.sequence_log()")     # holds the log head
    one(conn, "SELECT kc_flow.confirm_payment(%s)", (head_payment,))
    n = sessions_of(conn, head_payment, 10, timeout=10)
    ok(n == 10, "worker errors: with the log head held, a batch whose round failed still commits (10 sessions)", n)
finally:
    head.rollback()
    set_system(conn, "lock_timeout", None)
deadline = time.time() + 10
logged = []
while time.time() < deadline:
    logged = [r[0] for r in rows(conn, "SELECT event_type FROM kc_flow.events_since(%s, %s, 100)",
                                 (after, head_world.students[0]))]
    if "SESSIONS_GENERATED" in logged:
        break
    time.sleep(0.2)
ok("SESSIONS_GENERATED" in logged, "worker errors: ... and its events get positions once the head is free", logged)
check_invariants(conn, world.course, "worker errors")
check_invariants(conn, rr_world.course, "worker errors (repeatable read)")
check_invariants(conn, head_world.course, "worker errors (log head held)")
finish()
