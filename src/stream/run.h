/* `bettong run`: load a Wallaroo-API application and run it on this worker. */
#ifndef BETTONG_RUN_H
#define BETTONG_RUN_H

int cmd_run(int argc, char **argv);

#endif
