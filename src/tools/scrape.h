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

#endif
