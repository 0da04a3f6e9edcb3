/*
 * clock.h - the gateway's monotonic clock in milliseconds, for timeouts,
 * retry pacing and ages that must not jump with the wall clock.
 */
#ifndef KC_CLOCK_H
#define KC_CLOCK_H

#include <time.h>

static inline long long
kc_monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
