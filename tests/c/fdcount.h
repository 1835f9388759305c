/* For the C tests: how many descriptors this process has open (a leak check
 * compares two counts). Include after <cmocka.h>. */
#ifndef BETTONG_TEST_FDCOUNT_H
#define BETTONG_TEST_FDCOUNT_H

#include <dirent.h>

static inline int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

#endif
