/*
 * routes_admin_trace.c - what the operator console knows that Postgres does
 * not: when this gateway applied each recent event's invalidation and when it
 * pushed it (docs/gateway.md, "Operator console").
 *
 * One slot per event id (id modulo KC_TRACE_SLOTS), written by the listener's
 * subscriber (kc_ws_on_event), which sees ids in increasing order (the
 * listener hands events over from its gap-free catch-up only). So the slots
 * hold the last KC_TRACE_SLOTS ids applied, and a lookup tells an event that
 * is recorded from one that is older than the record, not applied yet, or
 * applied before the record began. The invalidation time is exact when the
 * listener recorded the event's lag (kc_metrics_take_event_lag: it does so on
 * its thread right before handing the event over), else the time the
 * subscriber got it, an upper bound. Memory: KC_TRACE_SLOTS x 48 bytes.
 * Each event also feeds the push-lag histogram, the session counters and the
 * stats of the current interval (routes_admin_stats.c).
 */
#include "routes_admin.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"

/* Reads exactly n digits at *p into *out and moves *p past them. */
static bool
digits(const char **p, int n, int *out)
{
	int			v = 0;

	for (int i = 0; i < n; i++)
	{
		if (!isdigit((unsigned char) (*p)[i]))
			return false;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return true;
}

bool
kc_admin_parse_ts(const char *s, double *out)
{
	const char *p = s;
	int			year,
				mon,
				day,
				hour,
				min,
				sec,
				oh = 0,
				om = 0,
				os = 0;
	double		frac = 0,
				scale = 0.1;
	int			sign = 0;
	struct tm	tm;
	time_t		t;

	if (!s || !digits(&p, 4, &year) || *p++ != '-' || !digits(&p, 2, &mon) || *p++ != '-' ||
		!digits(&p, 2, &day) || (*p != 'T' && *p != ' ') || !(p++, digits(&p, 2, &hour)) ||
		*p++ != ':' || !digits(&p, 2, &min) || *p++ != ':' || !digits(&p, 2, &sec))
		return false;
	if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 24 || min > 59 || sec > 60)
		return false;
	if (*p == '.')
	{
		p++;
		if (!isdigit((unsigned char) *p))
			return false;
		for (; isdigit((unsigned char) *p); p++, scale /= 10)
			frac += (*p - '0') * scale;
	}
	if (*p == 'Z')
		p++;
	else if (*p == '+' || *p == '-')
	{
		sign = *p++ == '+' ? 1 : -1;
		if (!digits(&p, 2, &oh))
			return false;
		if (*p == ':' && (p++, !digits(&p, 2, &om)))
			return false;
		if (*p == ':' && (p++, !digits(&p, 2, &os)))
			return false;
	}
	else
		return false;
	if (*p != '\0')
		return false;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	errno = 0;
	t = timegm(&tm);
	if (t == (time_t) -1 && errno != 0)
		return false;
	*out = (double) t + frac - sign * (oh * 3600.0 + om * 60.0 + os);
	return true;
}

#define TRACE_MASK (KC_TRACE_SLOTS - 1)
_Static_assert((KC_TRACE_SLOTS & TRACE_MASK) == 0, "KC_TRACE_SLOTS must be a power of two");

static pthread_mutex_t trace_lock = PTHREAD_MUTEX_INITIALIZER;
static kc_trace_entry trace[KC_TRACE_SLOTS];
static long long trace_first;	/* 0: nothing applied yet */
static long long trace_newest;
static double trace_since;

/* PURCHASE_CREATED calls for purchase_tier sessions; SESSIONS_GENERATED made count of them. */
static void
count_sessions(const kc_event_note *ev)
{
	bool		created = ev->type && strcmp(ev->type, "SESSIONS_GENERATED") == 0;
	bool		expected = ev->type && strcmp(ev->type, "PURCHASE_CREATED") == 0;
	cJSON	   *j;
	const cJSON *n;

	if ((!created && !expected) || !ev->payload)
		return;
	j = cJSON_Parse(ev->payload);
	n = cJSON_GetObjectItemCaseSensitive(j, created ? "count" : "purchase_tier");
	if (cJSON_IsNumber(n) && n->valuedouble >= 1 && n->valuedouble <= 1000)
		kc_metrics_add(created ? KC_M_SESSIONS_CREATED : KC_M_SESSIONS_EXPECTED,
					   (long long) n->valuedouble);
	cJSON_Delete(j);
}

void
kc_admin_trace_event(kc_app *app, const kc_event_note *ev, double reached, double pushed,
					 int sockets)
{
	double		lag = kc_metrics_take_event_lag();	/* this event's, if the listener recorded one */
	double		created = 0;
	bool		have_created = ev->created_at && kc_admin_parse_ts(ev->created_at, &created);
	kc_trace_entry e;

	memset(&e, 0, sizeof(e));
	e.id = ev->id;
	e.created = have_created ? created : 0;
	e.pushed = pushed;
	e.sockets = sockets;
	if (lag >= 0 && have_created)
	{
		e.invalidated = created + lag;
		if (e.invalidated > reached)
			e.invalidated = reached;	/* clocks apart: never after the hand-over */
		e.invalidated_exact = true;
	}
	else
		e.invalidated = reached;

	pthread_mutex_lock(&trace_lock);
	if (ev->id <= trace_newest)
	{
		/* handed over again after a listener reconnect: the first record stands */
		pthread_mutex_unlock(&trace_lock);
		return;
	}
	if (trace_first == 0)
	{
		trace_first = ev->id;
		trace_since = reached;
	}
	trace_newest = ev->id;
	trace[ev->id & TRACE_MASK] = e;
	pthread_mutex_unlock(&trace_lock);

	kc_admin_stats_event(have_created ? (e.invalidated - created) * 1000.0 : -1,
						 pushed > 0 && have_created ? (pushed - created) * 1000.0 : -1);
	if (pushed > 0 && have_created)
		kc_metrics_push_lag(pushed - created);
	count_sessions(ev);
	kc_admin_sampler_start(app);
}

kc_trace_status
kc_admin_trace_lookup(long long id, kc_trace_entry *out)
{
	kc_trace_status st;

	memset(out, 0, sizeof(*out));
	out->id = id;
	pthread_mutex_lock(&trace_lock);
	if (id > 0 && trace[id & TRACE_MASK].id == id)
	{
		*out = trace[id & TRACE_MASK];
		st = KC_TRACE_RECORDED;
	}
	else if (trace_first == 0 || id > trace_newest)
		st = trace_first == 0 ? KC_TRACE_BEFORE_START : KC_TRACE_NOT_YET;
	else if (id < trace_first)
		st = KC_TRACE_BEFORE_START;
	else if (id <= trace_newest - KC_TRACE_SLOTS)
		st = KC_TRACE_OLDER;
	else
		st = KC_TRACE_NOT_SEEN;
	pthread_mutex_unlock(&trace_lock);
	return st;
}

void
kc_admin_trace_window(kc_trace_window *w)
{
	pthread_mutex_lock(&trace_lock);
	w->first = trace_first;
	w->newest = trace_newest;
	w->oldest = trace_first == 0 ? 0 :
		(trace_newest - KC_TRACE_SLOTS + 1 > trace_first ? trace_newest - KC_TRACE_SLOTS + 1 : trace_first);
	w->since = trace_since;
	w->capacity = KC_TRACE_SLOTS;
	pthread_mutex_unlock(&trace_lock);
}

