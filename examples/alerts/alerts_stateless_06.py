"""Alerts on single transactions, with Wallaroo 0.6's pipeline API (the shape
of Wallaroo 0.6.1's alerts_stateless example, with Bettong's own data).

A generator source (alerts_transactions.py) makes bank transactions; a stateless
computation checks each one and, for a deposit of more than 4000, writes
"Deposit Alert for transaction <id>: <amount>\\n" to the sink, for a
withdrawal of more than 4000 "Withdrawal Alert for transaction <id>:
<amount>\\n". There is no --in: only --out.

Run it by hand (two terminals, from the repository root):

    bettong receive --listen 127.0.0.1:7002 --out /tmp/alerts.txt
    bettong run examples/alerts/alerts_stateless_06.py --out 127.0.0.1:7002 \\
        [--transactions 1000]

Without --transactions the generator runs forever, as Wallaroo's does; with
it, the source ends after that many transactions (the engine keeps running
until it is stopped). Add `--workers 2` to `bettong run` for two workers: as
in Wallaroo 0.6.1 the generator and, since nothing is keyed, the check run on
the first worker, so the alerts come in the transactions' order.
"""

import wallaroo

from alerts_transactions import alert, encode_alert, flags, generator_source

THRESHOLD = 4000


def application_setup(args):
    opts = flags(args)
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    pipeline = (generator_source("Alerts (stateless)", opts)
                .to(check_transaction)
                .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_alert)))
    return wallaroo.build_application("Alerts (stateless)", pipeline)


@wallaroo.computation(name="check transaction")
def check_transaction(transaction):
    return alert("transaction %d" % transaction.tid, transaction.amount, THRESHOLD)
