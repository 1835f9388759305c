/* The tests' embedded interpreter: started (GIL held) before a group, stopped
 * after. cmocka group setup/teardown functions. */
#ifndef BETTONG_TESTS_PYSETUP_H
#define BETTONG_TESTS_PYSETUP_H

#include "py/bridge.h"

static int py_group_setup(void **state)
{
    (void)state;
    char err[512];
    static char *argv[] = {"bettong-test", NULL};
    if (py_start(1, argv, NULL, err, sizeof err) < 0)
        return -1;
    py_gil_enter();
    return 0;
}

static int py_group_teardown(void **state)
{
    (void)state;
    py_gil_leave();
    py_stop();
    return 0;
}

#endif
