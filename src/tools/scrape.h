/* Reading a metrics endpoint, for `bettong top`: a blocking HTTP/1.1 GET of
 * /metrics with one deadline for the connection, the request and the whole
 * answer (read until the server closes, as Bettong's endpoints do), then the
 * body parsed by util/promparse. Every failure is a short sentence that does
 * not repeat the address (the caller names it). */
#ifndef BETTONG_SCRAPE_H
#define BETTONG_SCRAPE_H

#include <stddef.h>

#include "util/promparse.h"

/* The most read from one endpoint (head and body). */
#define SCRAPE_MAX_ANSWER (16u << 20)

/* GET http://addr/metrics within `timeout` seconds into doc (empty, as
 * prom_doc_init leaves it). Returns 0, or -1 with why in err ("cannot
 * connect: ...", "no complete answer in time ...", "answered 'HTTP/1.1 404
 * Not Found' (not 200)", "not the Prometheus text format: line N: ..."). */
int scrape_metrics(const char *addr, double timeout, prom_doc_t *doc, char *err, size_t errlen);

/* The body of a whole HTTP/1.x answer p[n] whose status is 200: *body and
 * *len (within p). Returns 0, or -1 with why in err (not HTTP, no end of the
 * head, another status, chunked). Public for the tests. */
int scrape_http_body(const char *p, size_t n, const char **body, size_t *len, char *err,
                     size_t errlen);

/* The longest metrics address a cluster member announces, with its NUL. */
#define SCRAPE_ADDR_MAX 300

/* The metrics addresses of the cluster members that a stream worker's
 * /topology.json lists ("members": itself and the others, as the cluster told
 * it), into out[cap]; *n of them. Returns 0 (n is 0 for a pool, a store or a
 * single worker), or -1 when addr did not answer with the page. */
int scrape_members(const char *addr, double timeout, char (*out)[SCRAPE_ADDR_MAX], size_t cap,
                   size_t *n);

/* The same from the page's text (public for the tests): the non-empty
 * "metrics" strings of the "members" array. */
size_t scrape_members_parse(const char *json, size_t len, char (*out)[SCRAPE_ADDR_MAX],
                            size_t cap);

#endif
