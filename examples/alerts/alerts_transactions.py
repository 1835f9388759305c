"""What the three alerts examples share: a deterministic stream of bank
transactions (a Wallaroo GenSourceConfig generator), the alerts they raise,
their encoder, and their command-line flags.

The stream. Transaction t (t = 0, 1, 2, ...) belongs to account
USERS[t % 5], in turn. Each account's balance after its transaction t is a
level in [-2500, 2500] computed from t alone (an integer hash), and the
transaction's amount moves the balance from the account's previous level
(0 before its first transaction) to this one: so an account's running total
stays within 2500 of zero, amounts lie in [-5000, 5000], and the sum of any
run of an account's transactions is the difference of two levels. Since the
next transaction depends only on the previous one's number, the generator
keeps no memory of its own: a source restarted from its last value (a
checkpoint) goes on exactly where it was.

Every transaction also carries its time: t x --interval-ms (default 1000,
one transaction a second) in ns since 1970, for windows on event time.

Flags (after the application's own, in `bettong run ... FLAGS`):

    --transactions N   stop after N (>= 1) transactions (ids 0..N-1); by default
                       the stream is endless, as Wallaroo's generators are
    --interval-ms MS   the time between two transactions (default 1000)
"""

import argparse

import wallaroo

USERS = ["Ada", "Bettong", "Dr. Quokka", "Numbat", "Zo\u00eb"]
LEVEL_SPAN = 2500
MASK64 = (1 << 64) - 1


def level(tid):
    """The balance of transaction `tid`'s account just after it: a hash of
    tid (splitmix64's finaliser), folded into [-LEVEL_SPAN, LEVEL_SPAN]."""
    if tid < 0:
        return 0  # accounts open empty
    x = ((tid + 1) * 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    x ^= x >> 31
    return x % (2 * LEVEL_SPAN + 1) - LEVEL_SPAN


class Transaction(object):
    def __init__(self, tid, user, amount, time_ns):
        self.tid = tid
        self.user = user
        self.amount = amount
        self.time_ns = time_ns

    def __repr__(self):
        return "Transaction(%d, %r, %d, %d)" % (self.tid, self.user, self.amount, self.time_ns)


class TransactionsGenerator(object):
    """Transactions 0, 1, 2, ...; with `count`, apply() gives None after
    transaction count-1, which ends the source."""

    def __init__(self, count=None, interval_ns=wallaroo.seconds(1)):
        self.count = count
        self.interval_ns = interval_ns

    def transaction(self, tid):
        user = USERS[tid % len(USERS)]
        # The same account's previous transaction is len(USERS) before.
        amount = level(tid) - level(tid - len(USERS))
        return Transaction(tid, user, amount, tid * self.interval_ns)

    def initial_value(self):
        return self.transaction(0)

    def apply(self, previous):
        tid = previous.tid + 1
        if self.count is not None and tid >= self.count:
            return None
        return self.transaction(tid)


class DepositAlert(object):
    def __init__(self, subject, amount):
        self.subject = subject
        self.amount = amount

    def __str__(self):
        return "Deposit Alert for %s: %d" % (self.subject, self.amount)


class WithdrawalAlert(DepositAlert):
    def __str__(self):
        return "Withdrawal Alert for %s: %d" % (self.subject, self.amount)


def alert(subject, amount, threshold):
    """The alert for an amount beyond +-threshold, or None."""
    if amount > threshold:
        return DepositAlert(subject, amount)
    if amount < -threshold:
        return WithdrawalAlert(subject, amount)
    return None


@wallaroo.encoder
def encode_alert(an_alert):
    return str(an_alert) + "\n"


def flags(args, extra=None):
    """The examples' flags parsed from `args` (the application's argv);
    `extra(parser)` adds an example's own. Wallaroo's and Bettong's flags
    are left alone."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--transactions", type=int, default=None)
    parser.add_argument("--interval-ms", type=int, default=1000)
    if extra:
        extra(parser)
    opts, _ = parser.parse_known_args(args[1:])
    if opts.transactions is not None and opts.transactions < 1:
        parser.error("--transactions must be >= 1")
    if opts.interval_ms < 1:
        parser.error("--interval-ms must be >= 1")
    return opts


def generator_source(name, opts):
    gen = TransactionsGenerator(opts.transactions, wallaroo.milliseconds(opts.interval_ms))
    return wallaroo.source(name, wallaroo.GenSourceConfig(gen))
