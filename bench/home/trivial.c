/*
 * bench/home/trivial.c - the baseline of the home benchmark: a libmicrohttpd server
 * configured like kc-gateway (internal thread pool, same thread count, same connection
 * memory and limits) that answers
 * every request with a fixed JSON body read from a file, with the headers kc-gateway
 * puts on a cached home (ETag, X-Cache, Vary, Cache-Control), so both send the same
 * bytes per answer. Whatever kc-gateway does beyond this (routing, JWT check, cache
 * lookup, logging, metrics) is what the benchmark ratio measures.
 *
 * Usage: trivial PORT THREADS BODYFILE   (stops on SIGTERM/SIGINT)
 */
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static char *body;
static size_t body_len;

static enum MHD_Result
answer(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
	   const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	static int	seen;

	(void) cls; (void) url; (void) method; (void) version; (void) upload_data;
	/* answer on the second call, as kc-gateway does: an answer queued on the first
	 * call makes libmicrohttpd close the connection (no keep-alive) */
	if (*con_cls == NULL)
	{
		*con_cls = &seen;
		return MHD_YES;
	}
	*upload_data_size = 0;
	resp = MHD_create_response_from_buffer(body_len, body, MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", "application/json");
	MHD_add_response_header(resp, "X-Cache", "HIT");
	MHD_add_response_header(resp, "ETag", "\"v0\"");
	MHD_add_response_header(resp, "Vary", "Authorization");
	MHD_add_response_header(resp, "Cache-Control", "private, no-cache");
	ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

int
main(int argc, char **argv)
{
	struct MHD_Daemon *d;
	FILE	   *f;
	long		n;
	sigset_t	sigs;
	int			sig;

	if (argc != 4)
	{
		fprintf(stderr, "usage: trivial PORT THREADS BODYFILE\n");
		return 2;
	}
	f = fopen(argv[3], "rb");
	if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET) != 0)
	{
		fprintf(stderr, "trivial: cannot read %s\n", argv[3]);
		return 1;
	}
	body = malloc((size_t) n);
	body_len = fread(body, 1, (size_t) n, f);
	fclose(f);

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ITC,
						 (uint16_t) atoi(argv[1]), NULL, NULL, answer, NULL,
						 MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) atoi(argv[2]),
						 MHD_OPTION_CONNECTION_LIMIT, (unsigned int) 4096,
						 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 60,
						 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) 64 * 1024,
						 MHD_OPTION_END);
	if (!d)
	{
		fprintf(stderr, "trivial: cannot listen on %s\n", argv[1]);
		return 1;
	}
	sigwait(&sigs, &sig);
	MHD_stop_daemon(d);
	free(body);
	return 0;
}
