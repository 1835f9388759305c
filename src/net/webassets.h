/* The dashboard's static files (web/dashboard/), built into the binary: the
 * Makefile runs mk/embed.sh over them into a generated C file
 * ($(BUILD)/gen/webassets.c) that defines this table. Nothing is read from
 * disk or fetched at run time. */
#ifndef BETTONG_WEBASSETS_H
#define BETTONG_WEBASSETS_H

#include <stddef.h>

typedef struct {
    const char *path;         /* "/index.html" */
    const char *content_type;
    const unsigned char *data; /* len bytes (and a NUL after them) */
    size_t len;
} webasset_t;

extern const webasset_t webassets[];
extern const size_t webassets_count;

#endif
