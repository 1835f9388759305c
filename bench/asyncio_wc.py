#!/usr/bin/env python3
"""A plain Python asyncio server doing the word count job: the baseline Bettong
must beat by 10x.

It listens on --in for connections carrying 4-byte big-endian framed UTF-8 lines,
runs the same user functions as examples/word_count/word_count.py (the plain
functions the wallaroo decorators keep in `_bettong_fn`), and writes
"word => count\\n" for every word to one TCP connection it opens to --out.

Written the way a competent asyncio author would: big reads, frames parsed out of
a buffer with struct.unpack_from, outputs of one read joined into one write,
drain() for back pressure. SIGTERM (or SIGINT) stops accepting, lets the open
connections finish what they already read, flushes the output and exits.

    asyncio_wc.py --in 127.0.0.1:PORT --out 127.0.0.1:PORT [--app-dir DIR]
"""

import argparse
import asyncio
import importlib
import os
import signal
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

READ_SIZE = 256 * 1024


def parse_addr(s):
    host, _, port = s.rpartition(":")
    return host or "127.0.0.1", int(port)


def load_app(app_dir, module):
    sys.path.insert(0, os.path.join(REPO, "python"))
    sys.path.insert(0, app_dir)
    m = importlib.import_module(module)
    return (m.decoder._bettong_fn, m.split._bettong_fn, m.partition._bettong_fn,
            m.count_word._bettong_fn, m.WordTotals, m.encoder._bettong_fn)


class WordCountServer:
    def __init__(self, app, out_addr):
        (self.decode, self.split, self.partition, self.count_word, self.state_class,
         self.encode) = app
        self.out_addr = out_addr
        self.states = {}
        self.writer = None
        self.lines = 0
        self.words = 0
        self.conns = set()
        self.stopping = asyncio.Event()

    async def connect_out(self):
        deadline = time.monotonic() + 30
        while True:
            try:
                _, self.writer = await asyncio.open_connection(*self.out_addr)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    def process(self, payloads):
        """Run the pipeline over a batch of payloads; returns the encoded output."""
        decode, split, partition = self.decode, self.split, self.partition
        count_word, encode, states = self.count_word, self.encode, self.states
        out = []
        append = out.append
        nwords = 0
        for payload in payloads:
            data = decode(payload)
            if data is None:
                continue
            words = split(data)
            if words is None:
                continue
            for word in words:
                key = partition(word)
                state = states.get(key)
                if state is None:
                    state = states[key] = self.state_class()
                result, _changed = count_word(word, state)
                nwords += 1
                if result is not None:
                    append(encode(result))
        self.lines += len(payloads)
        self.words += nwords
        if not out:
            return b""
        if isinstance(out[0], str):
            return "".join(out).encode("utf-8")
        return b"".join(o.encode("utf-8") if isinstance(o, str) else o for o in out)

    async def handle(self, reader, writer):
        task = asyncio.current_task()
        self.conns.add(task)
        buf = bytearray()
        unpack_from = struct.unpack_from
        try:
            while True:
                chunk = await reader.read(READ_SIZE)
                if not chunk:
                    break
                buf += chunk
                payloads = []
                pos, n = 0, len(buf)
                while n - pos >= 4:
                    (length,) = unpack_from(">I", buf, pos)
                    end = pos + 4 + length
                    if end > n:
                        break
                    payloads.append(bytes(buf[pos + 4:end]))
                    pos = end
                if pos:
                    del buf[:pos]
                if payloads:
                    data = self.process(payloads)
                    if data:
                        self.writer.write(data)
                        await self.writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.conns.discard(task)
            writer.close()

    async def run(self, in_addr):
        await self.connect_out()
        server = await asyncio.start_server(self.handle, *in_addr, backlog=128)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        port = server.sockets[0].getsockname()[1]
        print("asyncio_wc: listening on %s:%d" % (in_addr[0], port), flush=True)
        await self.stopping.wait()
        server.close()
        # Let the open connections process what they already read, briefly.
        for task in list(self.conns):
            task.cancel()
        if self.conns:
            await asyncio.wait(list(self.conns), timeout=2)
        await server.wait_closed()
        try:
            await asyncio.wait_for(self.writer.drain(), timeout=5)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), timeout=5)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        print("asyncio_wc: %d lines, %d words" % (self.lines, self.words),
              file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--in", dest="inp", required=True, help="HOST:PORT to listen on")
    ap.add_argument("--out", required=True, help="HOST:PORT to send the output to")
    ap.add_argument("--app-dir", default=os.path.join(REPO, "examples", "word_count"))
    ap.add_argument("--module", default="word_count")
    args = ap.parse_args()
    app = load_app(args.app_dir, args.module)
    asyncio.run(WordCountServer(app, parse_addr(args.out)).run(parse_addr(args.inp)))


if __name__ == "__main__":
    main()
