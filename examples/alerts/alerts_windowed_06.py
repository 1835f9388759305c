"""Alerts on what accounts moved within sliding windows of time, with
Wallaroo 0.6.1's windows (the shape of its alerts_windowed example, with
Bettong's own data), and optionally on the transactions' own time.

A generator source (alerts_transactions.py) makes bank transactions for five
accounts; key_by(user), then range_windows(9 s).with_slide(3 s) over
TotalAggregation adds up each account's transactions per window. A window
whose total is above 2000 writes "Deposit Alert for <user>: <total>\\n",
below -2000 "Withdrawal Alert for <user>: <total>\\n"; others write
nothing.

By default the windows run on ingest time, as Wallaroo's do: which
transactions share a window depends on how fast the generator runs, so the
alerts differ from run to run. With --event-time they run on the time each
transaction carries (transaction id x --interval-ms), through Bettong's
`with_event_time` extension: the windows, and so the alerts, depend only on
the transactions: the same on every run and on any number of workers.

Flags (besides alerts_transactions.py's --transactions N and --interval-ms MS):

    --range-ms MS     the windows' length (default 9000)
    --slide-ms MS     how far apart windows start (default 3000)
    --event-time      window on the transactions' time
    --late-ms MS      with --event-time: how far out of order transactions
                      may come (default 2000); an account's last windows
                      close about range + late after its last transaction

Run it by hand (two terminals, from the repository root):

    bettong receive --listen 127.0.0.1:7002 --out /tmp/alerts.txt
    bettong run examples/alerts/alerts_windowed_06.py --out 127.0.0.1:7002 \\
        [--event-time --transactions 1000]

Add `--workers 2` to `bettong run` for two workers: the generator runs on
the first; each account's windows are kept on the worker that owns its key,
and an account's alerts come in its windows' order.
"""

import wallaroo

from alerts_transactions import alert, encode_alert, flags, generator_source

THRESHOLD = 2000


def window_flags(parser):
    parser.add_argument("--range-ms", type=int, default=9000)
    parser.add_argument("--slide-ms", type=int, default=3000)
    parser.add_argument("--event-time", action="store_true")
    parser.add_argument("--late-ms", type=int, default=None)


def application_setup(args):
    opts = flags(args, window_flags)
    if opts.late_ms is not None and not opts.event_time:
        raise ValueError("--late-ms is for windows on event time (--event-time)")
    if opts.late_ms is None:
        opts.late_ms = 2000
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    windows = (wallaroo.range_windows(wallaroo.milliseconds(opts.range_ms))
               .with_slide(wallaroo.milliseconds(opts.slide_ms)))
    if opts.event_time:
        windows = windows.with_event_time(
            transaction_time, max_out_of_order=wallaroo.milliseconds(opts.late_ms))
    pipeline = (generator_source("Alerts (windowed)", opts)
                .key_by(extract_user)
                .to(windows.over(TotalAggregation))
                .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_alert)))
    return wallaroo.build_application("Alerts (windowed)", pipeline)


@wallaroo.key_extractor
def extract_user(transaction):
    return transaction.user


def transaction_time(transaction):
    return transaction.time_ns


class TransactionTotal(object):
    def __init__(self, total=0):
        self.total = total


class TotalAggregation(wallaroo.Aggregation):
    """The sum of an account's transactions in a window."""

    def initial_accumulator(self):
        return TransactionTotal()

    def update(self, transaction, acc):
        acc.total += transaction.amount

    def combine(self, acc1, acc2):
        return TransactionTotal(acc1.total + acc2.total)

    def output(self, user, acc):
        # Also called for empty windows (ingest time): their total is 0.
        return alert(user, acc.total, THRESHOLD)
