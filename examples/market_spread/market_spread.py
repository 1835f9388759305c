"""Market spread: two pipelines sharing one partitioned state, keyed by symbol.

Pipeline "Market Data" (the first --in address) receives frames of text
"SYMBOL,bid,offer" and records the latest bid and offer in the symbol's state;
it sends nothing on (it ends with done()). Pipeline "Orders" (the second --in
address) receives frames of text "ID,SYMBOL,side,qty,price" and checks each
order against the same state (both pipelines name the state "symbol data"):
the sink (the first --out address) receives "ID,SYMBOL,ACCEPT\\n" when the
price lies within [bid, offer], and "ID,SYMBOL,REJECT,reason\\n" otherwise,
the reason being "no market data", "below bid" or "above offer".

Run it by hand (from the repository root):

    bettong receive --listen 127.0.0.1:7002 --out /tmp/checked.txt
    bettong run examples/market_spread/market_spread.py \\
        --in 127.0.0.1:7010,127.0.0.1:7011 --out 127.0.0.1:7002
    bettong send --to 127.0.0.1:7010 --file examples/market_spread/data/market.txt
    bettong send --to 127.0.0.1:7011 --file examples/market_spread/data/orders.txt

Send the market data first: orders checked before their symbol's market data
has arrived are rejected with "no market data".
"""

import wallaroo

SYMBOLS = ["BTG", "RVR", "MILL", "BAKR", "FOG", "FERY", "INN", "LOOM", "POST", "HILL"]


def application_setup(args):
    market_addr, orders_addr = wallaroo.tcp_parse_input_addrs(args)[:2]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    ab = wallaroo.ApplicationBuilder("Market Spread")
    ab.new_pipeline("Market Data",
                    wallaroo.TCPSourceConfig(market_addr[0], market_addr[1],
                                             market_data_decoder))
    ab.to_state_partition(update_market_data, SymbolData, "symbol data",
                          symbol_partition, SYMBOLS)
    ab.done()

    ab.new_pipeline("Orders",
                    wallaroo.TCPSourceConfig(orders_addr[0], orders_addr[1],
                                             order_decoder))
    ab.to_state_partition(check_order, SymbolData, "symbol data",
                          symbol_partition, SYMBOLS)
    ab.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, order_result_encoder))
    return ab.build()


class SymbolData(object):
    """The latest market data of one symbol."""

    def __init__(self):
        self.bid = None
        self.offer = None


class MarketData(object):
    def __init__(self, symbol, bid, offer):
        self.symbol = symbol
        self.bid = bid
        self.offer = offer


class Order(object):
    def __init__(self, order_id, symbol, side, qty, price):
        self.order_id = order_id
        self.symbol = symbol
        self.side = side
        self.qty = qty
        self.price = price


class OrderResult(object):
    def __init__(self, order, reason):
        self.order = order
        self.reason = reason  # None: accepted


def parse_market_data(text):
    symbol, bid, offer = text.strip().split(",")
    return MarketData(symbol.strip(), float(bid), float(offer))


def parse_order(text):
    order_id, symbol, side, qty, price = text.strip().split(",")
    return Order(order_id.strip(), symbol.strip(), side.strip(), int(qty), float(price))


@wallaroo.decoder(header_length=4, length_fmt=">I")
def market_data_decoder(bs):
    return parse_market_data(bs.decode("utf-8"))


@wallaroo.decoder(header_length=4, length_fmt=">I")
def order_decoder(bs):
    return parse_order(bs.decode("utf-8"))


@wallaroo.partition
def symbol_partition(data):
    return data.symbol


@wallaroo.state_computation(name="update market data")
def update_market_data(data, state):
    state.bid = data.bid
    state.offer = data.offer
    return (None, True)


def order_rejection(order, state):
    """Why `order` is rejected against `state`, or None when it is accepted."""
    if state.bid is None:
        return "no market data"
    if order.price < state.bid:
        return "below bid"
    if order.price > state.offer:
        return "above offer"
    return None


@wallaroo.state_computation(name="check order")
def check_order(data, state):
    return (OrderResult(data, order_rejection(data, state)), False)


@wallaroo.encoder
def order_result_encoder(data):
    if data.reason is None:
        return "%s,%s,ACCEPT\n" % (data.order.order_id, data.order.symbol)
    return "%s,%s,REJECT,%s\n" % (data.order.order_id, data.order.symbol, data.reason)
