/*
 * log.c - JSON line logging for kc-gateway (docs/design.md §6 log format).
 *
 * Lines are built in a fixed stack buffer (bounded: long values are cut and
 * the line is marked "truncated") and written with one write(2) to stderr.
 */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = KC_LOG_INFO;
static char log_process[48];	/* ,"proc":K,"pid":P with --processes; else "" */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void
kc_log_set_level(kc_log_level level)
{
	atomic_store(&log_level, (int) level);
}

kc_log_level
kc_log_get_level(void)
{
	return (kc_log_level) atomic_load(&log_level);
}

bool
kc_log_enabled(kc_log_level level)
{
	return (int) level >= atomic_load(&log_level);
}

bool
kc_log_parse_level(const char *s, kc_log_level *out)
{
	for (int i = 0; i < 4; i++)
	{
		if (strcmp(s, level_names[i]) == 0)
		{
			*out = (kc_log_level) i;
			return true;
		}
	}
	if (strcmp(s, "warning") == 0)
	{
		*out = KC_LOG_WARN;
		return true;
	}
	return false;
}

void
kc_log_set_process(int index)
{
	snprintf(log_process, sizeof(log_process), ",\"proc\":%d,\"pid\":%d", index, (int) getpid());
}

const char *
kc_log_level_name(kc_log_level level)
{
	return level_names[level];
}

size_t
kc_json_escape(char *buf, size_t cap, const char *s)
{
	size_t		n = 0;

	while (*s)
	{
		unsigned char c = (unsigned char) *s;
		char		tmp[8];
		const char *out = tmp;
		size_t		olen;
		size_t		used = 1;

		if (c == '"' || c == '\\')
		{
			tmp[0] = '\\';
			tmp[1] = (char) c;
			olen = 2;
		}
		else if (c < 0x20)
		{
			snprintf(tmp, sizeof(tmp), "\\u%04x", c);
			olen = 6;
		}
		else if (c >= 0xc0)
		{
			/* a multi-byte UTF-8 character is copied whole or not at all */
			size_t		want = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;

			while (used < want && ((unsigned char) s[used] & 0xc0) == 0x80)
				used++;
			out = s;
			olen = used;
		}
		else
		{
			tmp[0] = (char) c;
			olen = 1;
		}
		if (n + olen >= cap)
			break;
		memcpy(buf + n, out, olen);
		n += olen;
		s += used;
	}
	if (cap > 0)
		buf[n < cap ? n : cap - 1] = '\0';
	return n;
}

static void
append_raw(kc_logline *l, const char *s, size_t n)
{
	/* keep room for the closing "}\n" and a truncation marker */
	if (l->len + n + 24 >= sizeof(l->buf))
	{
		l->truncated = true;
		return;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void
append_key(kc_logline *l, const char *key)
{
	char		tmp[96];
	int			n = snprintf(tmp, sizeof(tmp), ",\"%s\":", key);

	append_raw(l, tmp, (size_t) n < sizeof(tmp) ? (size_t) n : sizeof(tmp) - 1);
}

static void
append_string(kc_logline *l, const char *value)
{
	char		tmp[1024];
	size_t		n;

	append_raw(l, "\"", 1);
	n = kc_json_escape(tmp, sizeof(tmp), value ? value : "");
	if (value && strlen(value) > n)
		l->truncated = true;
	append_raw(l, tmp, n);
	append_raw(l, "\"", 1);
}

void
kc_log_begin(kc_logline *l, kc_log_level level, const char *msg)
{
	struct timeval tv;
	struct tm	tm;
	char		ts[64];

	l->len = 0;
	l->truncated = false;
	l->enabled = kc_log_enabled(level);
	if (!l->enabled)
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	l->len = (size_t) snprintf(l->buf, sizeof(l->buf),
							   "{\"ts\":\"%s.%03dZ\",\"level\":\"%s\",\"msg\":",
							   ts, (int) (tv.tv_usec / 1000), level_names[level]);
	append_string(l, msg);
	append_raw(l, log_process, strlen(log_process));
}

void
kc_log_str(kc_logline *l, const char *key, const char *value)
{
	if (!l->enabled)
		return;
	append_key(l, key);
	if (value == NULL)
		append_raw(l, "null", 4);
	else
		append_string(l, value);
}

void
kc_log_int(kc_logline *l, const char *key, long long value)
{
	char		tmp[32];
	int			n;

	if (!l->enabled)
		return;
	append_key(l, key);
	n = snprintf(tmp, sizeof(tmp), "%lld", value);
	append_raw(l, tmp, (size_t) n);
}

void
kc_log_bool(kc_logline *l, const char *key, bool value)
{
	if (!l->enabled)
		return;
	append_key(l, key);
	append_raw(l, value ? "true" : "false", value ? 4 : 5);
}

void
kc_log_ms(kc_logline *l, const char *key, double ms)
{
	char		tmp[32];
	int			n;

	if (!l->enabled)
		return;
	append_key(l, key);
	n = snprintf(tmp, sizeof(tmp), "%.3f", ms);
	append_raw(l, tmp, (size_t) n);
}

void
kc_log_end(kc_logline *l)
{
	if (!l->enabled)
		return;
	if (l->truncated)
	{
		static const char mark[] = ",\"truncated\":true";

		memcpy(l->buf + l->len, mark, sizeof(mark) - 1);
		l->len += sizeof(mark) - 1;
	}
	l->buf[l->len++] = '}';
	l->buf[l->len++] = '\n';
	/* one write per line: lines from different threads never interleave */
	if (write(STDERR_FILENO, l->buf, l->len) < 0)
		return;
}

void
kc_logf(kc_log_level level, const char *fmt, ...)
{
	kc_logline	l;
	char		msg[1024];
	va_list		ap;

	if (!kc_log_enabled(level))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	kc_log_begin(&l, level, msg);
	kc_log_end(&l);
}
