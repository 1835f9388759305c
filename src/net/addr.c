#include "net/addr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int hostport_parse(const char *s, hostport_t *out, char *err, size_t errlen)
{
    const char *colon;
    const char *host = s;
    size_t hostlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "bad address '%s' (expected [v6addr]:port)", s);
            return -1;
        }
        host = s + 1;
        hostlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) {
            snprintf(err, errlen, "bad address '%s' (expected host:port)", s);
            return -1;
        }
        hostlen = (size_t)(colon - s);
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535) {
        snprintf(err, errlen, "bad port in address '%s'", s);
        return -1;
    }
    if (hostlen >= sizeof out->host) {
        snprintf(err, errlen, "host name too long in '%s'", s);
        return -1;
    }
    if (hostlen == 0) {
        strcpy(out->host, "127.0.0.1");
    } else {
        memcpy(out->host, host, hostlen);
        out->host[hostlen] = '\0';
    }
    out->port = (int)port;
    return 0;
}

int hostport_resolve(const hostport_t *hp, struct sockaddr_storage *out, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char port[16];
    snprintf(port, sizeof port, "%d", hp->port);
    int rc = getaddrinfo(hp->host, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve '%s': %s", hp->host, gai_strerror(rc));
        return -1;
    }
    /* "localhost" may resolve to ::1 first while peers listen on 127.0.0.1:
     * prefer an IPv4 address when there is one. */
    struct addrinfo *pick = res;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
    memset(out, 0, sizeof *out);
    memcpy(out, pick->ai_addr, pick->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

void sockaddr_text(const struct sockaddr *sa, char *out, size_t outlen)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
        snprintf(out, outlen, "%s:%d", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
        snprintf(out, outlen, "[%s]:%d", host, port);
    } else {
        snprintf(out, outlen, "(unix)");
    }
}

int sockaddr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return 1;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return in6->sin6_addr.s6_addr[12] == 127;
    }
    return sa->sa_family == AF_UNIX;
}

int hostport_lookup(const char *text, struct sockaddr_storage *out, char *err, size_t errlen)
{
    hostport_t hp;
    if (hostport_parse(text, &hp, err, errlen) < 0)
        return -1;
    return hostport_resolve(&hp, out, err, errlen);
}
