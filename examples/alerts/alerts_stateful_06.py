"""Alerts on account balances, with Wallaroo 0.6's pipeline API (the shape of
Wallaroo 0.6.1's alerts_stateful example, with Bettong's own data).

A generator source (alerts_transactions.py) makes bank transactions for five
accounts; key_by(user) gives each account its own TransactionTotal state,
which adds up the account's transactions. After every transaction that
leaves the balance above 2000 the sink gets "Deposit Alert for <user>:
<balance>\\n", below -2000 "Withdrawal Alert for <user>: <balance>\\n".

Run it by hand (two terminals, from the repository root):

    bettong receive --listen 127.0.0.1:7002 --out /tmp/alerts.txt
    bettong run examples/alerts/alerts_stateful_06.py --out 127.0.0.1:7002 \\
        [--transactions 1000]

Without --transactions the generator runs forever, as Wallaroo's does. Add
`--workers 2` to `bettong run` for two workers: the generator runs on the
first; each account's balance is kept on the worker that owns its key, and
its alerts come in its transactions' order (the accounts' alerts interleave
differently from run to run).
"""

import wallaroo

from alerts_transactions import alert, encode_alert, flags, generator_source

THRESHOLD = 2000


def application_setup(args):
    opts = flags(args)
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    pipeline = (generator_source("Alerts (stateful)", opts)
                .key_by(extract_user)
                .to(check_transaction_total)
                .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_alert)))
    return wallaroo.build_application("Alerts (stateful)", pipeline)


@wallaroo.key_extractor
def extract_user(transaction):
    return transaction.user


class TransactionTotal(object):
    """An account's balance."""

    def __init__(self):
        self.total = 0


@wallaroo.state_computation(name="check transaction total", state=TransactionTotal)
def check_transaction_total(transaction, state):
    state.total += transaction.amount
    return alert(transaction.user, state.total, THRESHOLD)
