/* The stand-alone tools: a framed-data sender and a receiver (Wallaroo's giles
 * sender and data receiver). Each is a subcommand of `bettong`. */
#ifndef BETTONG_TOOLS_H
#define BETTONG_TOOLS_H

/* argv[0] is the subcommand name. Return the process exit code. */
int cmd_send(int argc, char **argv);
int cmd_receive(int argc, char **argv);

#endif
