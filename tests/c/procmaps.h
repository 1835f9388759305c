/* The tests' look at /proc/self/maps. */
#ifndef BETTONG_TESTS_PROCMAPS_H
#define BETTONG_TESTS_PROCMAPS_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Whether the mapping that holds p names `what` (a memfd's name, say): 1, 0
 * if it does not or nothing holds p, -1 if the file cannot be read. */
static int mapping_names(const void *p, const char *what)
{
    char line[512];
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && (uintptr_t)p >= lo && (uintptr_t)p < hi)
            found = strstr(line, what) != NULL;
    }
    fclose(f);
    return found;
}

#endif
