/* "host:port" parsing and resolution ("[::1]:7000" for IPv6). */
#ifndef BETTONG_ADDR_H
#define BETTONG_ADDR_H

#include <netinet/in.h>
#include <sys/socket.h>

typedef struct {
    char host[256];
    int port;
} hostport_t;

/* Split "host:port"; an empty host means 127.0.0.1. Returns 0 or -1 with a message
 * in err. */
int hostport_parse(const char *s, hostport_t *out, char *err, size_t errlen);
/* Resolve to a socket address (numeric or by name, blocking; IPv4 preferred). */
int hostport_resolve(const hostport_t *hp, struct sockaddr_storage *out, char *err, size_t errlen);
/* hostport_parse then hostport_resolve: "host:port" text to a socket address. */
int hostport_lookup(const char *text, struct sockaddr_storage *out, char *err, size_t errlen);
/* "host:port" text of a resolved address. */
void sockaddr_text(const struct sockaddr *sa, char *out, size_t outlen);
/* True for 127.0.0.0/8, ::1 and v4-mapped loopback. */
int sockaddr_is_loopback(const struct sockaddr *sa);

#endif
