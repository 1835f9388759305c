#include "stream/run.h"
#include <stdio.h>
int cmd_run(int argc, char **argv) { fprintf(stderr, "run: under construction\n"); return 2; }
