/*
 * ws_interest.c - the hub's interest counts: for each slot of a hash of
 * student ids, how many linked connections follow a student of that slot,
 * and how many follow every student (the firehose). The hub thread keeps
 * them as it links and unlinks connections (ws_stream.c); the thread that
 * posts an event reads them to decide whether the event rings the hub's
 * doorbell or waits quietly for its next turn (ws_hub.c). Slots are shared,
 * so a count says "may want": a false yes costs a wake-up, never an event.
 */
#include "ws_hub_int.h"

#include <string.h>

#include "setassoc.h"

static unsigned
interest_slot(const char *student)
{
	return (unsigned) (kc_hash(student, strlen(student)) & (KC_WS_INTEREST_SLOTS - 1));
}

void
kc_ws_interest_add(kc_ws_hub *h, const kc_ws_conn *c, int delta)
{
	if (c->all)
		atomic_fetch_add_explicit(&h->firehose_n, delta, memory_order_relaxed);
	else
		atomic_fetch_add_explicit(&h->interest[interest_slot(c->student)], (unsigned) delta,
								  memory_order_relaxed);
}

bool
kc_ws_interest_wanted(kc_ws_hub *h, const char *student)
{
	return atomic_load_explicit(&h->firehose_n, memory_order_relaxed) > 0 ||
		atomic_load_explicit(&h->interest[interest_slot(student)], memory_order_relaxed) > 0;
}
