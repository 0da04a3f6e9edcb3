/*
 * fuzz.h - what every fuzz target of test/fuzz shares: the input split into
 * C strings at NUL bytes, and a check that turns a broken promise of the
 * gateway into a crash libFuzzer records (with the input that caused it).
 */
#ifndef KC_FUZZ_H
#define KC_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_FIELDS 8

/* The input as up to FUZZ_MAX_FIELDS strings; missing fields are NULL. */
typedef struct fuzz_fields
{
	char	   *buf;
	const char *f[FUZZ_MAX_FIELDS];
	int			n;
} fuzz_fields;

static inline void
fuzz_split(fuzz_fields *ff, const uint8_t *data, size_t size)
{
	size_t		at = 0;

	memset(ff, 0, sizeof(*ff));
	ff->buf = malloc(size + 1);
	if (!ff->buf)
		abort();
	memcpy(ff->buf, data, size);
	ff->buf[size] = '\0';
	while (ff->n < FUZZ_MAX_FIELDS && at <= size)
	{
		ff->f[ff->n++] = ff->buf + at;
		at += strlen(ff->buf + at) + 1;
	}
}

static inline void
fuzz_free(fuzz_fields *ff)
{
	free(ff->buf);
}

/* True when s[0..len) is well-formed UTF-8 (RFC 3629: no overlongs, surrogates or > U+10FFFF). */
static inline int
fuzz_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *) s;
	size_t		i = 0;

	while (i < len)
	{
		unsigned char c = p[i];
		size_t		n;
		unsigned int cp;

		if (c < 0x80)
		{
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, cp = c & 0x07;
		else
			return 0;
		if (i + n >= len)
			return 0;
		for (size_t k = 1; k <= n; k++)
		{
			if ((p[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
			(cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n + 1;
	}
	return 1;
}

/* A promise of the gateway did not hold: report it and crash. */
#define FUZZ_CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

#endif
