"""Bettong test app: Wallaroo 0.6 windows on event time (Bettong's extension).

Frames are "key,ms,value": the event time is `ms` milliseconds since 1970
(given to the windows in ns). A value of 0 is a watermark-only message: it
moves its key's clock but is not counted, and a window holding nothing else
outputs nothing. The window is chosen with --window:
  tumbling  range_windows(--range-ms)
  sliding   range_windows(--range-ms).with_slide(--range-ms / 2)
  session   session_windows(--gap-ms)
with .with_event_time(extractor, max_out_of_order=--ooo-ms) and
.with_late_data(--late): drop, update (keep --keep-ms) or side (the second
--out address gets "LATE key,ms,value" lines). Each window's output is
"key [start,end) v1,v2,..." (ms; the values sorted), from output(key, acc,
window); with --datetime the extractor returns a datetime instead of ns.
With --source-time the frames are connector frames (wallaroo.experimental's
stream_message_decoder) and the windows take their event time from the
frame, with_event_time() having no extractor; `ms` in the payload is then
not used.
"""

import argparse
import datetime

import wallaroo


def application_setup(args):
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", default="tumbling",
                        choices=["tumbling", "sliding", "session"])
    parser.add_argument("--range-ms", type=int, default=1000)
    parser.add_argument("--gap-ms", type=int, default=300)
    parser.add_argument("--ooo-ms", type=int, default=500)
    parser.add_argument("--late", default="drop", choices=["drop", "update", "side"])
    parser.add_argument("--keep-ms", type=int, default=None)
    parser.add_argument("--datetime", action="store_true")
    parser.add_argument("--source-time", action="store_true")
    opts, _ = parser.parse_known_args(args[1:])
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    outs = wallaroo.tcp_parse_output_addrs(args)
    ms = wallaroo.milliseconds
    if opts.window == "session":
        w = wallaroo.session_windows(ms(opts.gap_ms))
    else:
        w = wallaroo.range_windows(ms(opts.range_ms))
        if opts.window == "sliding":
            w = w.with_slide(ms(opts.range_ms // 2))
    if opts.source_time:
        w = w.with_event_time(max_out_of_order=ms(opts.ooo_ms))
    else:
        w = w.with_event_time(event_time_dt if opts.datetime else event_time,
                              max_out_of_order=ms(opts.ooo_ms))
    if opts.late == "side":
        w = w.with_late_data(wallaroo.late_to(
            wallaroo.TCPSinkConfig(outs[1][0], outs[1][1], encode_late)))
    elif opts.late == "update":
        keep = None if opts.keep_ms is None else ms(opts.keep_ms)
        w = w.with_late_data("update", keep=keep)
    else:
        w = w.with_late_data("drop")
    decoder = decode_connector_frame if opts.source_time else decode
    pipeline = (wallaroo.source("events", wallaroo.TCPSourceConfig(in_host, in_port, decoder))
                .key_by(extract_key)
                .to(w.over(Values))
                .to_sink(wallaroo.TCPSinkConfig(outs[0][0], outs[0][1], encode)))
    return wallaroo.build_application("eventtime", pipeline)


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(bs):
    key, ms, value = bs.decode().split(",")
    return key, int(ms), int(value)


@wallaroo.experimental.stream_message_decoder
def decode_connector_frame(bs):
    key, ms, value = bs.decode().split(",")
    return key, int(ms), int(value)


@wallaroo.key_extractor
def extract_key(msg):
    return msg[0]


def event_time(msg):
    return msg[1] * 1000000


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def event_time_dt(msg):
    return EPOCH + datetime.timedelta(milliseconds=msg[1])


class Values(wallaroo.Aggregation):
    def initial_accumulator(self):
        return []

    def update(self, msg, acc):
        if msg[2]:
            acc.append(msg[2])

    def combine(self, a1, a2):
        return a1 + a2

    def output(self, key, acc, window):
        if not acc:
            return None
        start, end = window
        return "%s [%d,%d) %s" % (key, start // 1000000, end // 1000000,
                                  ",".join(str(v) for v in sorted(acc)))


@wallaroo.encoder
def encode(line):
    return (line + "\n").encode()


@wallaroo.encoder
def encode_late(msg):
    return ("LATE %s,%d,%d\n" % msg).encode()
