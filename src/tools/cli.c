#include "tools/cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_init(cli_t *c, int argc, char **argv)
{
    c->argc = argc;
    c->argv = argv;
    c->next = 1;
    c->options_done = 0;
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
