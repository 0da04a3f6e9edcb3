/*
 * shared_state.c
 *      The little shared memory kc_flow keeps when it is preloaded.
 *
 * Six things live here:
 *  - the workers' latches, so that a committing transaction that emitted an
 *    event can wake the workers at once instead of waiting for their poll;
 *  - the trainers' loads by which the allocation search ranks them, a hash
 *    table of its own (trainer_load.c), attached here;
 *  - for every worker, the trainers its open batch has locked (booked, until
 *    the batch commits), so that another worker's search passes over them
 *    before checking them instead of finding them first (stage_allocation.c);
 *  - for every backend, the start time of its open transaction once it has
 *    emitted an event: kc_flow.health() reports the oldest such transaction,
 *    the only one whose events are still to come (0.2.0's log, log.c);
 *  - which tables of the event queue's ring hold no row and can get none until
 *    they are current again (queue_ring.c), so that the workers' claims
 *    leave them out (dispatch.c);
 *  - for every backend, the first event id its open transaction took, used
 *    only while the database still has the 0.1.0 schema (between the library
 *    upgrade and ALTER EXTENSION): the smallest is the 0.1.0 event horizon,
 *    below which kc_flow.events_since() may return everything.
 *
 * 0.1.0 only: ids are taken from events_id_seq while holding the lock in
 * shared mode and noted before the lock is released; the horizon is read in
 * exclusive mode.  Since the sequence hands out ids in increasing order, an id
 * taken after the horizon was read is above every id noted at that moment.
 */
#include "kc_flow.h"

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "access/twophase.h"
#include "utils/uuid.h"

typedef struct KcfWorkerSlot
{
	Latch	   *latch;
	pid_t		pid;
} KcfWorkerSlot;

/* trainers a worker's batch may hold that others' searches pass over; the rest are skipped when locked */
#define KCF_HELD_MAX 64

typedef struct KcfShared
{
	LWLock	   *lock;			/* shared: taking an id; exclusive: horizon */
	slock_t		mutex;			/* protects workers[], nheld[] and held[] */
	KcfWorkerSlot workers[KCF_MAX_WORKERS];
	int			nheld[KCF_MAX_WORKERS];
	pg_uuid_t	held[KCF_MAX_WORKERS][KCF_HELD_MAX];	/* trainers locked by the worker's open batch */
	pg_atomic_uint64 commits;	/* commits that woke the workers, ever */
	pg_atomic_uint32 batch[KCF_MAX_WORKERS];	/* 1: in a batch that will end with a round */
	pg_atomic_uint32 busy[KCF_MAX_WORKERS];	/* 1: not waiting on its latch */
	Oid			queue_relid;	/* the queue's ring, as worker 0 last checked it (mutex): */
	int64		queue_generation;	/* its generation then */
	uint32		queue_drained;	/* its tables found drained then, a bit per slot */
	int			nslots;
	pg_atomic_uint64 *writing_since;	/* by pgprocno: xact start, 0 = none */
	pg_atomic_uint64 first_id[FLEXIBLE_ARRAY_MEMBER];	/* by pgprocno, 0 = none */
} KcfShared;

bool		kcf_preloaded = false;
static KcfShared *kcf_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool kcf_holds_first_id = false;
static int	kcf_held_worker = -1;	/* this backend's worker number, once it has a batch */
static bool kcf_noted_writing = false;

static int
slot_count(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

static Size
shared_size(void)
{
	return add_size(offsetof(KcfShared, first_id),
					mul_size(2 * slot_count(), sizeof(pg_atomic_uint64)));
}

static void
kcf_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shared_size());
	RequestNamedLWLockTranche("kc_flow", 1);
	kcf_trainer_load_shmem_request();
}

static void
kcf_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	kcf_shared = ShmemInitStruct("kc_flow", shared_size(), &found);
	if (!found)
	{
		kcf_shared->lock = &(GetNamedLWLockTranche("kc_flow"))->lock;
		SpinLockInit(&kcf_shared->mutex);
		memset(kcf_shared->workers, 0, sizeof(kcf_shared->workers));
		memset(kcf_shared->nheld, 0, sizeof(kcf_shared->nheld));
		kcf_shared->queue_relid = InvalidOid;
		kcf_shared->queue_generation = 0;
		kcf_shared->queue_drained = 0;
		pg_atomic_init_u64(&kcf_shared->commits, 0);
		for (int i = 0; i < KCF_MAX_WORKERS; i++)
		{
			pg_atomic_init_u32(&kcf_shared->batch[i], 0);
			pg_atomic_init_u32(&kcf_shared->busy[i], 0);
		}
		kcf_shared->nslots = slot_count();
		kcf_shared->writing_since = &kcf_shared->first_id[kcf_shared->nslots];
		for (int i = 0; i < kcf_shared->nslots; i++)
		{
			pg_atomic_init_u64(&kcf_shared->first_id[i], 0);
			pg_atomic_init_u64(&kcf_shared->writing_since[i], 0);
		}
	}
	kcf_trainer_load_shmem_startup();
	LWLockRelease(AddinShmemInitLock);
}

void
kcf_shmem_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = kcf_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = kcf_shmem_startup;
}

bool
kcf_shared_ready(void)
{
	return kcf_shared != NULL;
}

void
kcf_register_worker_latch(int worker, Latch *latch)
{
	SpinLockAcquire(&kcf_shared->mutex);
	kcf_shared->workers[worker].latch = latch;
	kcf_shared->workers[worker].pid = MyProcPid;
	SpinLockRelease(&kcf_shared->mutex);
}

void
kcf_unregister_worker_latch(int worker)
{
	SpinLockAcquire(&kcf_shared->mutex);
	kcf_shared->workers[worker].latch = NULL;
	kcf_shared->workers[worker].pid = 0;
	SpinLockRelease(&kcf_shared->mutex);
}

int
kcf_worker_pid(int worker)
{
	pid_t		pid;

	if (kcf_shared == NULL || worker < 0 || worker >= KCF_MAX_WORKERS)
		return 0;
	SpinLockAcquire(&kcf_shared->mutex);
	pid = kcf_shared->workers[worker].pid;
	SpinLockRelease(&kcf_shared->mutex);
	return pid;
}

/*
 * Counts a commit that wakes the workers (before their latches are set): a
 * worker that read the count before its round's snapshot knows that a larger
 * count means a commit its round may not have seen.
 */
void
kcf_count_commit(void)
{
	if (kcf_shared != NULL)
		pg_atomic_fetch_add_u64(&kcf_shared->commits, 1);
}

uint64
kcf_commit_count(void)
{
	return kcf_shared ? pg_atomic_read_u64(&kcf_shared->commits) : 0;
}

/* Marks worker as in a batch that will end with a sequencer round (or not any more). */
void
kcf_set_in_batch(int worker, bool in_batch)
{
	pg_atomic_write_u32(&kcf_shared->batch[worker], in_batch ? 1 : 0);
}

/* Worker `worker`'s batch starts or has ended: it holds no trainer. */
void
kcf_held_reset(int worker)
{
	kcf_held_worker = worker;
	if (kcf_shared == NULL)
		return;
	SpinLockAcquire(&kcf_shared->mutex);
	kcf_shared->nheld[worker] = 0;
	SpinLockRelease(&kcf_shared->mutex);
}

/* This worker's batch has locked trainer trainer_id (nothing outside a worker). */
void
kcf_held_note(Datum trainer_id)
{
	int			n;

	if (kcf_shared == NULL || kcf_held_worker < 0)
		return;
	SpinLockAcquire(&kcf_shared->mutex);
	n = kcf_shared->nheld[kcf_held_worker];
	if (n < KCF_HELD_MAX)
	{
		memcpy(&kcf_shared->held[kcf_held_worker][n], DatumGetUUIDP(trainer_id), sizeof(pg_uuid_t));
		kcf_shared->nheld[kcf_held_worker] = n + 1;
	}
	SpinLockRelease(&kcf_shared->mutex);
}

/*
 * The trainers the other workers' open batches have locked, as uuid Datums
 * in *ids (palloc'd); returns how many.  A moment old at most: a batch that
 * committed meanwhile holds them no longer, and they are busier by now.
 */
int
kcf_held_by_others(Datum **ids)
{
	pg_uuid_t  *copy = palloc(sizeof(pg_uuid_t) * KCF_MAX_WORKERS * KCF_HELD_MAX);
	int			n = 0;

	if (kcf_shared != NULL)
	{
		SpinLockAcquire(&kcf_shared->mutex);
		for (int w = 0; w < KCF_MAX_WORKERS; w++)
		{
			if (w == kcf_held_worker || kcf_shared->nheld[w] == 0)
				continue;
			memcpy(&copy[n], kcf_shared->held[w], sizeof(pg_uuid_t) * kcf_shared->nheld[w]);
			n += kcf_shared->nheld[w];
		}
		SpinLockRelease(&kcf_shared->mutex);
	}
	*ids = palloc(sizeof(Datum) * Max(n, 1));
	for (int i = 0; i < n; i++)
		(*ids)[i] = UUIDPGetDatum(&copy[i]);
	return n;
}

/*
 * Notes the tables of the event queue's ring (relid: its parent) that worker 0
 * found drained at generation, a bit per slot (queue_ring.c).
 */
void
kcf_queue_drained_note(Oid relid, int64 generation, uint32 drained)
{
	if (kcf_shared == NULL)
		return;
	SpinLockAcquire(&kcf_shared->mutex);
	kcf_shared->queue_relid = relid;
	kcf_shared->queue_generation = generation;
	kcf_shared->queue_drained = drained;
	SpinLockRelease(&kcf_shared->mutex);
}

/*
 * The drained tables last noted for the queue's ring relid, and at which
 * generation; none when nothing was noted for that relation.
 */
uint32
kcf_queue_drained(Oid relid, int64 *generation)
{
	uint32		drained = 0;

	*generation = -1;
	if (kcf_shared == NULL)
		return 0;
	SpinLockAcquire(&kcf_shared->mutex);
	if (kcf_shared->queue_relid == relid && OidIsValid(relid))
	{
		*generation = kcf_shared->queue_generation;
		drained = kcf_shared->queue_drained;
	}
	SpinLockRelease(&kcf_shared->mutex);
	return drained;
}

/* Whether a worker other than `worker` is in a batch that will end with a round. */
bool
kcf_other_in_batch(int worker)
{
	for (int i = 0; i < KCF_MAX_WORKERS; i++)
		if (i != worker && pg_atomic_read_u32(&kcf_shared->batch[i]) != 0)
			return true;
	return false;
}

/*
 * Whether worker is at work (anything but waiting on its latch: a batch, its
 * round, worker 0's housekeeping, rotations and ANALYZEs).
 */
void
kcf_set_busy(int worker, bool busy)
{
	pg_atomic_write_u32(&kcf_shared->busy[worker], busy ? 1 : 0);
}

/*
 * Wakes the workers for a commit that queued events; cheap, safe to call at
 * commit.  One worker that is not busy is enough: woken after the commit, its
 * next claim sees the events.  Waking the others too made each of them claim
 * nothing, one empty transaction per commit and worker at low rates.  The
 * worker woken is flagged busy here, by the waker, rather than by itself once
 * it runs: on a loaded machine a woken worker may wait milliseconds for a
 * CPU, and the next commit meanwhile must go to another idle worker instead
 * of setting the same latch again while the other sleeps.  When every worker
 * is busy, all are woken, so that each goes round again after its batch
 * instead of sleeping.
 */
void
kcf_wake_workers(void)
{
	Latch	   *latches[KCF_MAX_WORKERS];
	Latch	   *idle = NULL;
	int			n = 0;

	if (kcf_shared == NULL)
		return;
	SpinLockAcquire(&kcf_shared->mutex);
	for (int i = 0; i < KCF_MAX_WORKERS; i++)
		if (kcf_shared->workers[i].latch != NULL)
		{
			uint32		not_busy = 0;

			latches[n++] = kcf_shared->workers[i].latch;
			if (idle == NULL && kcf_shared->workers[i].latch != MyLatch &&
				pg_atomic_compare_exchange_u32(&kcf_shared->busy[i], &not_busy, 1))
				idle = kcf_shared->workers[i].latch;
		}
	SpinLockRelease(&kcf_shared->mutex);
	if (idle != NULL)
	{
		SetLatch(idle);
		return;
	}
	for (int i = 0; i < n; i++)
		if (latches[i] != MyLatch)
			SetLatch(latches[i]);
}

/* Starts taking an event id: hold the lock until kcf_inflight_end(). */
void
kcf_inflight_begin(void)
{
	LWLockAcquire(kcf_shared->lock, LW_SHARED);
}

/* Notes the id just taken, if it is this transaction's first. */
void
kcf_inflight_note(int64 id)
{
	pg_atomic_uint64 *slot = &kcf_shared->first_id[MyProc->pgprocno];

	if (pg_atomic_read_u64(slot) == 0)
		pg_atomic_write_u64(slot, (uint64) id);
	kcf_holds_first_id = true;
	LWLockRelease(kcf_shared->lock);
}

/*
 * Forgets this backend's open event ids and its writing note.  Called at the
 * end of the top-level transaction, after a commit has become visible to
 * other snapshots.
 */
void
kcf_inflight_end(void)
{
	if (kcf_shared == NULL)
		return;
	if (kcf_holds_first_id)
		pg_atomic_write_u64(&kcf_shared->first_id[MyProc->pgprocno], 0);
	if (kcf_noted_writing)
		pg_atomic_write_u64(&kcf_shared->writing_since[MyProc->pgprocno], 0);
	kcf_holds_first_id = kcf_noted_writing = false;
}

/* Notes that this backend's open transaction, started at `since`, emitted events. */
void
kcf_note_writing(TimestampTz since)
{
	if (kcf_shared == NULL || kcf_noted_writing)
		return;
	/* a timestamp of 0 is the year 2000: never a transaction's start here */
	pg_atomic_write_u64(&kcf_shared->writing_since[MyProc->pgprocno], (uint64) since);
	kcf_noted_writing = true;
}

/* The start of the oldest open transaction that emitted events; 0 when none. */
TimestampTz
kcf_oldest_writer(void)
{
	uint64		oldest = 0;

	if (kcf_shared == NULL)
		return 0;
	for (int i = 0; i < kcf_shared->nslots; i++)
	{
		uint64		t = pg_atomic_read_u64(&kcf_shared->writing_since[i]);

		if (t != 0 && (oldest == 0 || (int64) t < (int64) oldest))
			oldest = t;
	}
	return (TimestampTz) oldest;
}

/* The smallest id any open transaction took, or 0 when there is none. */
int64
kcf_inflight_horizon(void)
{
	uint64		horizon = 0;

	LWLockAcquire(kcf_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < kcf_shared->nslots; i++)
	{
		uint64		id = pg_atomic_read_u64(&kcf_shared->first_id[i]);

		if (id != 0 && (horizon == 0 || id < horizon))
			horizon = id;
	}
	LWLockRelease(kcf_shared->lock);
	return (int64) horizon;
}
