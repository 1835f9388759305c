/* Small helpers shared by the subcommands' argument parsers. */
#ifndef BETTONG_ARGS_H
#define BETTONG_ARGS_H

#include <stdint.h>

/* If argv[*i] is `flag`, as "--flag value" or "--flag=value", return the value
 * (advancing *i past a separate value). NULL if argv[*i] is another argument;
 * NULL with *missing set when the flag is last and has no value. `missing` may
 * be NULL for callers that treat a missing value as "not this flag". */
const char *args_flag_value(int argc, char **argv, int *i, const char *flag, int *missing);

/* A decimal integer in [min, max] with nothing after it. Returns 0 or -1. */
int args_parse_long(const char *s, long min, long max, long *out);

/* A byte count: digits with an optional K, M or G suffix (powers of 1024),
 * greater than 0. Returns 0 or -1. */
int args_parse_size(const char *s, uint64_t *out);

#endif
