/*
 * tap_check.h
 *      One TAP line per check, and the count of failed ones, for the C unit
 *      tests of the gateway (test/gateway/test_unit.c, test_ws_hub.c).
 *      Included once per test program.
 */
#ifndef KC_TAP_CHECK_H
#define KC_TAP_CHECK_H

#include <stdio.h>

static int	failures;

static void
check(int cond, const char *name)
{
	printf("%s - %s\n", cond ? "ok" : "not ok", name);
	if (!cond)
		failures++;
}

#endif
