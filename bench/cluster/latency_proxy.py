#!/usr/bin/env python3
"""A TCP proxy that adds latency, and the echo server / client used to measure it (standard library only).

netem is not available on every kernel (it is not on the Debian 12 VM this was written on), so the
emulated cluster (emulate.py) adds link latency here, in user space, instead of in the qdisc.

  proxy  --listen HOST:PORT --target HOST:PORT --delay-ms D [--src-delay ADDR=MS]... [--stats-file F]
         Accepts connections on HOST:PORT and forwards each to the target. Every chunk read from either
         side is written to the other side D ms (plus the --src-delay of the connecting peer's address)
         after it was read. Chunks keep their order, the delay of one chunk does not hold back the
         next (a stream's throughput is not limited by the delay), one slow connection never blocks
         another (one asyncio task per direction), and each direction buffers at most --max-buffer
         bytes: beyond that the proxy stops reading, so TCP flow control pushes back on the sender.
         Half-closes (EOF) are forwarded after the same delay; a reset on one side closes both.
  echo   --listen HOST:PORT
         Measurement server: a connection's first byte picks the mode: 'E' echo every byte back,
         'U' + 8-byte little-endian N: read N bytes then answer one byte, 'D' + N: send N bytes.
  ping   --target HOST:PORT [--count N] [--bytes B] [--json]
         Measurement client for an echo server: median/min/p90 round trip of 64-byte messages, and
         upload/download throughput of B bytes (each minus one measured round trip).

Exit with SIGINT or SIGTERM. The proxy writes its counters to --stats-file every second, on SIGUSR1
and when it exits.
"""
import argparse
import asyncio
import collections
import ipaddress
import json
import os
import signal
import socket
import statistics
import struct
import sys
import time

CHUNK_BYTES = 64 * 1024


def split_hostport(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' is not HOST:PORT")
    return host.strip("[]"), int(port)


def set_nodelay(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------- proxy


class Counters:
    def __init__(self):
        self.connections = 0
        self.active = 0
        self.failed_connects = 0
        self.bytes_to_target = 0
        self.bytes_to_client = 0
        self.max_buffered_bytes = 0

    def as_dict(self):
        return dict(self.__dict__)


class DelayedPipe:
    """One direction of one connection: read chunks, write each one `delay_s` after it was read."""

    def __init__(self, reader, writer, delay_s, max_buffer_bytes, counters, counter_name):
        self.reader = reader
        self.writer = writer
        self.delay_s = delay_s
        self.max_buffer_bytes = max_buffer_bytes
        self.counters = counters
        self.counter_name = counter_name
        self.pending = collections.deque()  # (deadline, bytes | None for EOF), in arrival order
        self.has_data = asyncio.Event()
        self.buffered_bytes = 0
        self.room = asyncio.Event()
        self.room.set()

    def push(self, deadline, data):
        self.pending.append((deadline, data))
        self.has_data.set()

    async def read_side(self):
        loop = asyncio.get_running_loop()
        try:
            while True:
                # Bounded buffering: stop reading while too much is in flight, so the sender is
                # slowed down by TCP flow control instead of us growing without bound.
                while self.buffered_bytes >= self.max_buffer_bytes:
                    self.room.clear()
                    await self.room.wait()
                data = await self.reader.read(CHUNK_BYTES)
                if not data:
                    break
                self.buffered_bytes += len(data)
                if self.buffered_bytes > self.counters.max_buffered_bytes:
                    self.counters.max_buffered_bytes = self.buffered_bytes
                self.push(loop.time() + self.delay_s, data)
        finally:
            # EOF (or an error, which the caller turns into closing both sides) after the same delay.
            self.push(loop.time() + self.delay_s, None)

    async def write_side(self):
        loop = asyncio.get_running_loop()
        while True:
            while not self.pending:
                self.has_data.clear()
                await self.has_data.wait()
            deadline, data = self.pending.popleft()
            wait = deadline - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                if self.writer.can_write_eof():
                    self.writer.write_eof()
                return
            # Coalesce chunks that are already due, so a burst costs one write.
            parts = [data]
            now = loop.time()
            while self.pending and self.pending[0][1] is not None and self.pending[0][0] <= now:
                parts.append(self.pending.popleft()[1])
            blob = b"".join(parts) if len(parts) > 1 else data
            self.writer.write(blob)
            await self.writer.drain()
            setattr(self.counters, self.counter_name, getattr(self.counters, self.counter_name) + len(blob))
            self.buffered_bytes -= len(blob)
            self.room.set()


class Proxy:
    def __init__(self, target, delay_ms, src_delays, max_buffer_bytes, connect_timeout_s):
        self.target = target
        self.delay_ms = delay_ms
        self.src_delays = src_delays  # [(ip_network, ms)]
        self.max_buffer_bytes = max_buffer_bytes
        self.connect_timeout_s = connect_timeout_s
        self.counters = Counters()

    def delay_for(self, peer_host):
        extra = 0.0
        try:
            ip = ipaddress.ip_address(peer_host)
            for net, ms in self.src_delays:
                if ip in net:
                    extra = ms
                    break
        except ValueError:
            pass
        return (self.delay_ms + extra) / 1000.0

    async def handle(self, client_reader, client_writer):
        try:
            await self.forward(client_reader, client_writer)
        except asyncio.CancelledError:
            pass  # shutting down with the connection open

    async def forward(self, client_reader, client_writer):
        self.counters.connections += 1
        self.counters.active += 1
        peer = client_writer.get_extra_info("peername") or ("?", 0)
        delay_s = self.delay_for(peer[0])
        target_writer = None
        try:
            try:
                target_reader, target_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), self.connect_timeout_s)
            except (OSError, asyncio.TimeoutError):
                self.counters.failed_connects += 1
                return
            set_nodelay(client_writer)
            set_nodelay(target_writer)
            up = DelayedPipe(client_reader, target_writer, delay_s, self.max_buffer_bytes, self.counters,
                             "bytes_to_target")
            down = DelayedPipe(target_reader, client_writer, delay_s, self.max_buffer_bytes, self.counters,
                               "bytes_to_client")
            tasks = [asyncio.create_task(t) for t in
                     (up.read_side(), up.write_side(), down.read_side(), down.write_side())]
            # Done when both directions delivered their EOF, or as soon as anything fails (a reset).
            writers_done = 0
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failed = any(t.exception() is not None for t in done if not t.cancelled())
                writers_done += sum(1 for t in done if t in (tasks[1], tasks[3]))
                if failed or writers_done == 2:
                    break
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            self.counters.active -= 1
            for w in (client_writer, target_writer):
                if w is not None:
                    try:
                        w.close()
                    except Exception:
                        pass


async def run_proxy(args):
    src_delays = []
    for item in args.src_delay:
        addr, sep, ms = item.partition("=")
        if not sep:
            sys.exit(f"latency_proxy: --src-delay '{item}' is not ADDR=MS")
        src_delays.append((ipaddress.ip_network(addr, strict=False), float(ms)))
    proxy = Proxy(args.target, args.delay_ms, src_delays, args.max_buffer, args.connect_timeout)
    server = await asyncio.start_server(proxy.handle, args.listen[0], args.listen[1], reuse_address=True,
                                        backlog=128)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def write_stats():
        if args.stats_file:
            tmp = args.stats_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(proxy.counters.as_dict(), f)
            os.replace(tmp, args.stats_file)

    loop.add_signal_handler(signal.SIGUSR1, write_stats)  # "write the counters now"
    print(f"latency_proxy listening on {args.listen[0]}:{args.listen[1]} -> {args.target[0]}:{args.target[1]} "
          f"delay {args.delay_ms:g} ms" + "".join(f", +{ms:g} ms from {n}" for n, ms in src_delays), flush=True)
    while not stop.is_set():
        write_stats()
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
    server.close()
    write_stats()
    print("latency_proxy stopping: " + json.dumps(proxy.counters.as_dict()), flush=True)


# ------------------------------------------------------------------------------- measurement tools


async def echo_client(reader, writer):
    set_nodelay(writer)
    try:
        mode = await reader.readexactly(1)
        if mode == b"E":
            while True:
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        elif mode in (b"U", b"D"):
            (n,) = struct.unpack("<Q", await reader.readexactly(8))
            if mode == b"U":
                left = n
                while left > 0:
                    data = await reader.read(min(left, CHUNK_BYTES))
                    if not data:
                        return
                    left -= len(data)
                writer.write(b"k")
            else:
                block = b"\0" * CHUNK_BYTES
                left = n
                while left > 0:
                    writer.write(block[:min(left, CHUNK_BYTES)])
                    left -= min(left, CHUNK_BYTES)
                    await writer.drain()
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def run_echo(args):
    server = await asyncio.start_server(echo_client, args.listen[0], args.listen[1], reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"echo listening on {args.listen[0]}:{args.listen[1]}", flush=True)
    await stop.wait()
    server.close()


def ping(target, count, n_bytes, timeout_s=30.0):
    """Blocking client: round trips and throughput through whatever is between us and an echo server."""
    def connect(mode):
        s = socket.create_connection(target, timeout=timeout_s)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(mode)
        return s

    def recv_exactly(s, n):
        got = 0
        while got < n:
            chunk = s.recv(min(n - got, 1 << 20))
            if not chunk:
                raise ConnectionError("connection closed")
            got += len(chunk)

    out = {"target": f"{target[0]}:{target[1]}"}
    s = connect(b"E")
    msg = b"x" * 64
    s.sendall(msg)
    recv_exactly(s, 64)  # warm-up
    rtts = []
    for _ in range(count):
        t0 = time.perf_counter()
        s.sendall(msg)
        recv_exactly(s, 64)
        rtts.append((time.perf_counter() - t0) * 1000.0)
    s.close()
    rtts.sort()
    out["rtt_ms_median"] = statistics.median(rtts)
    out["rtt_ms_min"] = rtts[0]
    out["rtt_ms_p90"] = rtts[min(len(rtts) - 1, int(0.9 * len(rtts)))]
    rtt_s = out["rtt_ms_median"] / 1000.0
    if n_bytes > 0:
        # Upload: send N bytes, the server acks the last one (one round trip of overhead).
        s = connect(b"U" + struct.pack("<Q", n_bytes))
        block = b"\0" * (1 << 20)
        t0 = time.perf_counter()
        left = n_bytes
        while left > 0:
            s.sendall(block[:min(left, len(block))])
            left -= min(left, len(block))
        recv_exactly(s, 1)
        dt = time.perf_counter() - t0
        s.close()
        out["upload_mbit_s"] = n_bytes * 8 / max(dt - rtt_s, 1e-6) / 1e6
        # Download: ask for N bytes (one round trip before the first byte arrives).
        s = connect(b"D" + struct.pack("<Q", n_bytes))
        t0 = time.perf_counter()
        recv_exactly(s, n_bytes)
        dt = time.perf_counter() - t0
        s.close()
        out["download_mbit_s"] = n_bytes * 8 / max(dt - rtt_s, 1e-6) / 1e6
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("proxy")
    p.add_argument("--listen", type=split_hostport, required=True)
    p.add_argument("--target", type=split_hostport, required=True)
    p.add_argument("--delay-ms", type=float, default=0.0, help="added to each direction")
    p.add_argument("--src-delay", action="append", default=[], metavar="ADDR=MS",
                   help="extra delay for connections from ADDR (an address or CIDR), each direction")
    p.add_argument("--max-buffer", type=int, default=4 << 20, help="bytes buffered per direction (4 MiB)")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--stats-file")
    e = sub.add_parser("echo")
    e.add_argument("--listen", type=split_hostport, required=True)
    c = sub.add_parser("ping")
    c.add_argument("--target", type=split_hostport, required=True)
    c.add_argument("--count", type=int, default=50)
    c.add_argument("--bytes", type=int, default=0, help="also measure throughput with this many bytes")
    c.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.cmd == "proxy":
        asyncio.run(run_proxy(args))
    elif args.cmd == "echo":
        asyncio.run(run_echo(args))
    else:
        r = ping(args.target, args.count, args.bytes)
        if args.json:
            print(json.dumps(r))
        else:
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
