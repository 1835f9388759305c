#include "tools/cli.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The Pony runtime's flags (ponyc 0.25, which Wallaroo 0.6.1 was built with,
 * plus --ponypin and --ponynoscale of other releases): thread counts, cycle
 * detection, GC and scheduler tuning. None of them changes what a tool sends
 * or writes. */
typedef struct {
    const char *name;
    int has_value;
} pony_flag_t;

static const pony_flag_t pony_flags[] = {
    {"--ponythreads", 1},   {"--ponyminthreads", 1}, {"--ponysuspendthreshold", 1},
    {"--ponycdinterval", 1}, {"--ponygcinitial", 1},  {"--ponygcfactor", 1},
    {"--ponynoyield", 0},   {"--ponynoblock", 0},    {"--ponynopin", 0},
    {"--ponypinasio", 0},   {"--ponypin", 0},        {"--ponynoscale", 0},
};
#define NPONY (sizeof pony_flags / sizeof pony_flags[0])
_Static_assert(NPONY <= 32, "cli_t.pony_seen has a bit per Pony flag");

void cli_init(cli_t *c, int argc, char **argv)
{
    c->argc = argc;
    c->argv = argv;
    c->next = 1;
    c->options_done = 0;
    c->pony_ok = 0;
    c->pony_seen = 0;
}

void cli_accept_pony_flags(cli_t *c) { c->pony_ok = 1; }

void cli_pony_note(unsigned pony_seen, const char *prog)
{
    if (!pony_seen)
        return;
    fprintf(stderr, "%s: note: ignoring", prog);
    const char *sep = " ";
    for (size_t i = 0; i < NPONY; i++)
        if (pony_seen & (1u << i)) {
            fprintf(stderr, "%s%s", sep, pony_flags[i].name);
            sep = ", ";
        }
    fprintf(stderr, ": Pony runtime flags (Wallaroo's tools are Pony programs; "
                    "this one is not)\n");
}

static int all_digits(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* Does `arg` name option `name`, either alone or as "name=value"? */
static int name_matches(const char *arg, const char *name, const char **inline_value)
{
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0)
        return 0;
    if (arg[n] == '\0') {
        *inline_value = NULL;
        return 1;
    }
    /* Only long options take "=value"; "-fx" is not "-f x". */
    if (arg[n] == '=' && name[0] == '-' && name[1] == '-') {
        *inline_value = arg + n + 1;
        return 1;
    }
    return 0;
}

static const cli_option_t *find_option(const char *arg, const cli_option_t *opts, size_t nopts,
                                       const char **inline_value)
{
    for (size_t i = 0; i < nopts; i++)
        for (int k = 0; k < CLI_MAX_NAMES && opts[i].names[k]; k++)
            if (name_matches(arg, opts[i].names[k], inline_value))
                return &opts[i];
    return NULL;
}

/* Pick the option's value from inline text or the following argument. */
static cli_status take_value(cli_t *c, const cli_option_t *o, const char *arg,
                             const char *inline_value, const char **value, char *err,
                             size_t errlen)
{
    *value = NULL;
    switch (o->kind) {
    case CLI_FLAG:
        if (inline_value) {
            snprintf(err, errlen, "option '%s' takes no value", arg);
            return CLI_ERROR;
        }
        return CLI_OPTION;
    case CLI_VALUE:
        if (inline_value) {
            *value = inline_value;
            return CLI_OPTION;
        }
        if (c->next >= c->argc) {
            snprintf(err, errlen, "option '%s' needs a value", arg);
            return CLI_ERROR;
        }
        *value = c->argv[c->next++];
        return CLI_OPTION;
    case CLI_OPTIONAL_COUNT:
        if (inline_value) {
            *value = inline_value;
        } else if (c->next < c->argc && all_digits(c->argv[c->next])) {
            *value = c->argv[c->next++];
        }
        return CLI_OPTION;
    }
    snprintf(err, errlen, "internal error: bad option kind");
    return CLI_ERROR;
}

/* 1: `arg` was a Pony runtime flag, now skipped with its value; 0: it is not
 * one; -1: refused (message in err). */
static int skip_pony_flag(cli_t *c, const char *arg, char *err, size_t errlen)
{
    const char *inline_value;
    if (name_matches(arg, "--ponyversion", &inline_value)) {
        snprintf(err, errlen, "'%s' makes a Pony program print its runtime's version "
                 "instead of running; there is no Pony runtime here", arg);
        return -1;
    }
    for (size_t i = 0; i < NPONY; i++) {
        if (!name_matches(arg, pony_flags[i].name, &inline_value))
            continue;
        if (pony_flags[i].has_value && !inline_value) {
            if (c->next >= c->argc) {
                snprintf(err, errlen, "option '%s' needs a value", arg);
                return -1;
            }
            c->next++;
        } else if (!pony_flags[i].has_value && inline_value) {
            snprintf(err, errlen, "option '%s' takes no value", arg);
            return -1;
        }
        c->pony_seen |= 1u << i;
        return 1;
    }
    return 0;
}

cli_status cli_next(cli_t *c, const cli_option_t *opts, size_t nopts, int *id,
                    const char **value, char *err, size_t errlen)
{
    if (c->next >= c->argc)
        return CLI_END;
    const char *arg = c->argv[c->next++];
    /* "-" alone is the conventional name for stdin, not an option. */
    if (c->options_done || arg[0] != '-' || arg[1] == '\0') {
        *value = arg;
        return CLI_POSITIONAL;
    }
    if (strcmp(arg, "--") == 0) {
        c->options_done = 1;
        return cli_next(c, opts, nopts, id, value, err, errlen);
    }
    if (c->pony_ok) {
        int pony = skip_pony_flag(c, arg, err, errlen);
        if (pony < 0)
            return CLI_ERROR;
        if (pony > 0)
            return cli_next(c, opts, nopts, id, value, err, errlen);
    }
    const char *inline_value = NULL;
    const cli_option_t *o = find_option(arg, opts, nopts, &inline_value);
    if (!o) {
        snprintf(err, errlen, "unknown option '%s'", arg);
        return CLI_ERROR;
    }
    *id = o->id;
    return take_value(c, o, arg, inline_value, value, err, errlen);
}

int cli_parse_u64(const char *s, uint64_t *out)
{
    if (!all_digits(s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static int digit_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A' + 10;
    return 99;
}

/* Pony's String.read_int with base 0: a 0x / 0b prefix only when at least one
 * character follows it, a leading 0 is not octal, '_' is skipped, and the
 * whole string must be used. giles reads I64, hence the INT64_MAX bound. */
int cli_parse_pony_count(const char *s, uint64_t *out)
{
    uint64_t base = 10, v = 0;
    int digits = 0;
    if (strlen(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X' || s[1] == 'b' ||
                                         s[1] == 'B')) {
        base = (s[1] == 'x' || s[1] == 'X') ? 16 : 2;
        s += 2;
    }
    for (; *s; s++) {
        if (*s == '_')
            continue;
        uint64_t d = (uint64_t)digit_value(*s);
        if (d >= base || v > ((uint64_t)INT64_MAX - d) / base)
            return -1;
        v = v * base + d;
        digits++;
    }
    if (!digits)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_nonneg(const char *s, double *out)
{
    if (*s == '\0')
        return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < 0)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_hostport(const char *s, hostport_t *out, char *err, size_t errlen)
{
    if (all_digits(s)) {
        char buf[32];
        if (strlen(s) > 10) {
            snprintf(err, errlen, "bad port '%s'", s);
            return -1;
        }
        snprintf(buf, sizeof buf, ":%s", s);
        return hostport_parse(buf, out, err, errlen);
    }
    return hostport_parse(s, out, err, errlen);
}

uint64_t cli_rate(uint64_t records, uint64_t ns)
{
    if (ns == 0)
        return 0;
    return (uint64_t)llround((double)records * 1e9 / (double)ns);
}

const char *cli_rate_text(char *buf, size_t len, uint64_t records, uint64_t ns)
{
    if (ns < CLI_RATE_MIN_NS)
        snprintf(buf, len, "too short to measure a rate");
    else
        snprintf(buf, len, "%" PRIu64 " records/s", cli_rate(records, ns));
    return buf;
}
