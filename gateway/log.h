/*
 * log.h - one JSON object per line on stderr, the gateway's only way to log.
 *
 * Every line carries "ts", "level" and "msg"; callers add fields with a small
 * builder so that cache actions log the fields of docs/design.md §6 (studentId,
 * cacheKey, reason, existedBefore, version, durationMs).
 */
#ifndef KC_LOG_H
#define KC_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum kc_log_level
{
	KC_LOG_DEBUG = 0,
	KC_LOG_INFO,
	KC_LOG_WARN,
	KC_LOG_ERROR
} kc_log_level;

/* A log line under construction; fields are appended in call order. */
typedef struct kc_logline
{
	char		buf[2048];
	size_t		len;
	bool		truncated;
	bool		enabled;
} kc_logline;

void		kc_log_set_level(kc_log_level level);
kc_log_level kc_log_get_level(void);
bool		kc_log_enabled(kc_log_level level);
/* Parses debug|info|warn|error; returns false for anything else. */
bool		kc_log_parse_level(const char *s, kc_log_level *out);
const char *kc_log_level_name(kc_log_level level);
/*
 * From now on every line of this process says which process of the gateway
 * wrote it: "proc" (0: the supervisor, 1..N: a child of --processes N) and
 * "pid". Without --processes lines carry neither.
 */
void		kc_log_set_process(int index);

/* Starts a line; when the level is filtered out every later call is a no-op. */
void		kc_log_begin(kc_logline *l, kc_log_level level, const char *msg);
void		kc_log_str(kc_logline *l, const char *key, const char *value);
void		kc_log_int(kc_logline *l, const char *key, long long value);
void		kc_log_bool(kc_logline *l, const char *key, bool value);
void		kc_log_ms(kc_logline *l, const char *key, double ms);
/* Writes the line with a single write(2) so concurrent lines never interleave. */
void		kc_log_end(kc_logline *l);

/* Shorthand for a line with only a message. */
void		kc_logf(kc_log_level level, const char *fmt, ...)
			__attribute__((format(printf, 2, 3)));

/*
 * Writes s into buf as a JSON string body (no quotes), cut to fit cap but
 * never inside an escape or a UTF-8 character; returns bytes written.
 */
size_t		kc_json_escape(char *buf, size_t cap, const char *s);

#endif
