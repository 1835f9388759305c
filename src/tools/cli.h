/* Command-line helpers shared by the send and receive tools: a small option
 * scanner that knows aliases, "--name=value" and optional numeric values, plus
 * number and address parsing that rejects trailing junk. */
#ifndef BETTONG_TOOLS_CLI_H
#define BETTONG_TOOLS_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "net/addr.h"

typedef enum {
    CLI_FLAG,           /* no value */
    CLI_VALUE,          /* "--name V" or "--name=V" */
    CLI_OPTIONAL_COUNT, /* value only if inline or the next argument is all digits */
} cli_kind;

#define CLI_MAX_NAMES 4

typedef struct {
    int id;
    cli_kind kind;
    const char *names[CLI_MAX_NAMES]; /* unused slots are NULL */
} cli_option_t;

typedef struct {
    int argc;
    char **argv;
    int next;          /* index of the next argument to look at */
    int options_done;  /* after "--" everything is positional */
    int pony_ok;       /* cli_accept_pony_flags was called */
    unsigned pony_seen; /* a bit per Pony runtime flag given (cli.c's table) */
} cli_t;

typedef enum {
    CLI_END = 0,
    CLI_OPTION,     /* *id and *value (NULL for flags or a missing optional count) */
    CLI_POSITIONAL, /* *value is the argument */
    CLI_ERROR,      /* message in err */
} cli_status;

/* argv[0] is the subcommand name and is skipped. */
void cli_init(cli_t *c, int argc, char **argv);
cli_status cli_next(cli_t *c, const cli_option_t *opts, size_t nopts, int *id,
                    const char **value, char *err, size_t errlen);

/* Wallaroo's tools are Pony programs, and their command lines carry the Pony
 * runtime's own flags (--ponythreads=1 --ponynoblock ...), which the runtime
 * takes out before the program sees them. After this call cli_next skips them
 * (with their values) the same way, and refuses --ponyversion, which would only
 * print the runtime's version. */
void cli_accept_pony_flags(cli_t *c);
/* One line on stderr naming the Pony runtime flags that were skipped, if any
 * (pony_seen: cli_t's after parsing). */
void cli_pony_note(unsigned pony_seen, const char *prog);

/* Decimal digits only, no sign, no overflow. Returns 0 or -1. */
int cli_parse_u64(const char *s, uint64_t *out);
/* A count as giles reads it (Pony's String.i64): decimal, or hexadecimal or
 * binary after 0x / 0b, with '_' anywhere ignored ("100_000_000"); no sign, at
 * most INT64_MAX. Returns 0 or -1. */
int cli_parse_pony_count(const char *s, uint64_t *out);
/* A finite number >= 0 (seconds, records per second). Returns 0 or -1. */
int cli_parse_nonneg(const char *s, double *out);
/* hostport_parse, plus a bare "PORT" meaning 127.0.0.1:PORT. */
int cli_parse_hostport(const char *s, hostport_t *out, char *err, size_t errlen);

/* records per second over `ns` nanoseconds, rounded; 0 when no time passed. */
uint64_t cli_rate(uint64_t records, uint64_t ns);

/* Below this span the first and last records came in one or a few reads (or
 * writes), and their clock readings say more about scheduling than about a
 * rate; the summaries print "too short to measure a rate" instead. */
#define CLI_RATE_MIN_NS 1000000ULL
/* "R records/s", or "too short to measure a rate" below CLI_RATE_MIN_NS. */
const char *cli_rate_text(char *buf, size_t len, uint64_t records, uint64_t ns);

#endif
