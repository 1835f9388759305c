/* `bettong top H:P [H:P...]`: a terminal view of the Prometheus metrics of
 * running workers, pools and stores (their --metrics-listen addresses):
 * scraped every --interval, shown with rates between two scrapes and latency
 * percentiles from the histograms' buckets; one snapshot with --once or when
 * stdout is not a terminal. */
#ifndef BETTONG_TOP_H
#define BETTONG_TOP_H

/* argv[0] is the subcommand name. Returns the exit code: 0; 1 if an endpoint
 * could not be read (--once / not a terminal); 2 for a bad command line. */
int cmd_top(int argc, char **argv);

#endif
