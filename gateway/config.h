/*
 * config.h - kc-gateway configuration: one struct, filled from defaults, then
 * the environment (KC_*), then command-line flags (--name=value or --name value).
 * `kc-gateway --help` prints every option with its variable and default.
 */
#ifndef KC_CONFIG_H
#define KC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "log.h"

typedef struct kc_config
{
	char	   *database_url;	/* libpq connection string or URI */
	char	   *replica_url;	/* hot standbys for cache misses: libpq URIs, space-separated; "" none */
	char	   *redis_url;		/* redis://[:password@]host[:port][/db] */
	char	   *listen;			/* host:port the HTTP server binds */
	char	   *jwt_secret;		/* HS256 key */
	bool		auth;			/* false only for local demos */
	int			cache_ttl;		/* seconds, safety net only */
	int			local_cache;	/* students kept in process too; 0: off */
	int			token_cache;	/* verified tokens remembered; 0: off */
	char	   *cors_origins;	/* comma list, "*" or empty (no CORS) */
	kc_log_level log_level;
	int			processes;		/* gateway processes sharing the port (supervisor.c) */
	int			threads;		/* HTTP worker threads */
	int			pg_pool;		/* request connections to Postgres */
	int			redis_pool;		/* request connections to Redis */
	char	   *static_dir;		/* holds index.html */
	int			drain_timeout;	/* seconds to finish requests on SIGTERM */
	int			max_body;		/* bytes of request body accepted */
	int			pg_timeout_ms;	/* statement_timeout of request connections */
	int			retry_after;	/* seconds, in 503 answers */
	int			ws_max_connections; /* WebSocket connections held at most */
	int			open_files;		/* RLIMIT_NOFILE wanted; 0: derived */
	int			ws_queue;		/* events queued per WebSocket before 1008 */
	int			ws_ping_interval;	/* seconds of silence before a ping */
	int			ws_pong_timeout;	/* seconds to answer it */
	bool		demo;			/* POST /api/v1/demo/purchase exists */
	/* token mode: print a token and exit */
	char	   *issue_token;	/* subject */
	char	   *token_role;
	int			token_ttl;

	/* derived from listen */
	char		listen_host[128];
	int			listen_port;
} kc_config;

typedef enum kc_config_result
{
	KC_CONFIG_OK,
	KC_CONFIG_EXIT,				/* --help or --version was printed */
	KC_CONFIG_ERROR				/* message in err */
} kc_config_result;

/* Fills c; env is looked up with getenv. Errors name the offending option. */
kc_config_result kc_config_load(kc_config *c, int argc, char **argv,
								char *err, size_t errlen);
void		kc_config_usage(FILE *out);
void		kc_config_free(kc_config *c);
/* Splits "host:port" (or "[v6]:port" or ":port"); false when malformed. */
bool		kc_config_parse_listen(const char *s, char *host, size_t hostlen, int *port);

#endif
