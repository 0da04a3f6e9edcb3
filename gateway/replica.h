/*
 * replica.h - hot standbys that may answer cache misses (--replica-url).
 *
 * A miss may be read on a replica only when the replica's view is at least
 * the version the request needs: the client's ?min_version=, and the
 * student's fence in Redis (docs/gateway.md, "Read replicas"). The version
 * is read in the same snapshot as the view, so the replica's own answer says
 * how far its replay has gone for that student; the fence is checked by the
 * fill that follows (refused when the fence is above the version), and a
 * view the fill refused is never answered: the primary is read instead.
 */
#ifndef KC_REPLICA_H
#define KC_REPLICA_H

#include <stdbool.h>
#include <stddef.h>

#include "db.h"

struct kc_body;
typedef struct kc_replicas kc_replicas;

/*
 * One pool of size connections per libpq URI of urls (several separated by
 * spaces; a single key=value string is one replica). NULL with err empty
 * when urls is empty, NULL with err filled when out of memory.
 */
kc_replicas *kc_replicas_create(const char *urls, int size, int stmt_timeout_ms,
								char *err, size_t errlen);
void		kc_replicas_destroy(kc_replicas *r);

/*
 * Reads the view of stmt (KC_STMT_HOME or KC_STMT_LEARNING) for student on
 * the next replica that answers (round robin): a new body when its version
 * is at least need, else NULL (every replica down, behind, or failing; the
 * caller reads the primary; counted in kc_replica_fallbacks_total).
 */
struct kc_body *kc_replicas_read(kc_replicas *r, kc_db_stmt stmt, const char *student,
								 long long need);

#endif
