"""Market spread with Wallaroo 0.6's pipeline API: the same inputs and output
as market_spread.py, with the two streams merged into one state computation.

Source "Market Data" (the first --in address) receives frames of text
"SYMBOL,bid,offer"; source "Orders" (the second) receives frames of text
"ID,SYMBOL,side,qty,price". The two are merged and keyed by symbol, so both
kinds of message for a symbol reach its one SymbolData state: market data
records the latest bid and offer (and sends nothing on); an order is checked
against them, and the sink (the first --out address) receives
"ID,SYMBOL,ACCEPT\\n" when the price lies within [bid, offer], and
"ID,SYMBOL,REJECT,reason\\n" otherwise, the reason being "no market data",
"below bid" or "above offer".

Run it as market_spread.py (see there), with
examples/market_spread/market_spread_06.py.
"""

import wallaroo

SYMBOLS = ["BTG", "RVR", "MILL", "BAKR", "FOG", "FERY", "INN", "LOOM", "POST", "HILL"]


def application_setup(args):
    market_addr, orders_addr = wallaroo.tcp_parse_input_addrs(args)[:2]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]

    market_data = wallaroo.source("Market Data", wallaroo.TCPSourceConfig(
        market_addr[0], market_addr[1], market_data_decoder))
    orders = wallaroo.source("Orders", wallaroo.TCPSourceConfig(
        orders_addr[0], orders_addr[1], order_decoder))
    pipeline = (market_data.merge(orders)
                .key_by(extract_symbol)
                .to(check)
                .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, order_result_encoder)))
    return wallaroo.build_application("Market Spread", pipeline)


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


@wallaroo.key_extractor
def extract_symbol(data):
    return data.symbol


def order_rejection(order, state):
    """Why `order` is rejected against `state`, or None when it is accepted."""
    if state.bid is None:
        return "no market data"
    if order.price < state.bid:
        return "below bid"
    if order.price > state.offer:
        return "above offer"
    return None


@wallaroo.state_computation(name="check", state=SymbolData)
def check(data, state):
    if isinstance(data, MarketData):
        state.bid = data.bid
        state.offer = data.offer
        return None
    return OrderResult(data, order_rejection(data, state))


@wallaroo.encoder
def order_result_encoder(data):
    if data.reason is None:
        return "%s,%s,ACCEPT\n" % (data.order.order_id, data.order.symbol)
    return "%s,%s,REJECT,%s\n" % (data.order.order_id, data.order.symbol, data.reason)
