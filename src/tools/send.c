#include "tools/tools.h"
#include <stdio.h>
int cmd_send(int argc, char **argv) { fprintf(stderr, "send: under construction\n"); return 2; }
