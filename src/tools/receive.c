#include "tools/tools.h"
#include <stdio.h>
int cmd_receive(int argc, char **argv) { fprintf(stderr, "receive: under construction\n"); return 2; }
