"""WebSocket echo load, with the `websockets` package (PyPI), for
bench/websocket.sh.

  ws_echo.py rate URL PROXY CA SIZE CONNS WINDOW SECONDS
      CONNS connections, each with a sender keeping WINDOW binary messages
      of SIZE bytes in flight and a receiver checking each echo; counts the
      echoes received during SECONDS after a one-second warm-up
  ws_echo.py latency URL PROXY CA SIZE SECONDS
      one connection, one message in flight: round trips during SECONDS
      after the warm-up

PROXY is an http:// proxy URL or "-" for none; CA is a PEM file to trust
for wss:// ("-" for ws://). Prints one JSON line: messages, seconds,
rate (messages/s), for latency p50/p99/mean in microseconds, and the CPU
seconds used during the counted SECONDS by this client and by each process
named in $WATCH ("proxy:PID echo:PID"), read from /proc.
Compression is off (no permessage-deflate), so the bytes on the wire are
the message bytes.
"""

import asyncio
import json
import os
import ssl
import sys
import time

from websockets.asyncio.client import connect

WARMUP = 1.0
TICK = os.sysconf("SC_CLK_TCK")


def watched():
    """`{name: pid}` from $WATCH."""
    return dict(
        (name, int(pid))
        for name, pid in (w.split(":") for w in os.environ.get("WATCH", "").split())
    )


def cpu_now(pids):
    """CPU seconds (user + system, all threads) so far, per watched process."""
    now = {"client": time.process_time()}
    for name, pid in pids.items():
        with open(f"/proc/{pid}/stat") as f:
            # proc(5): fields after the parenthesised command; utime, stime are 14, 15.
            fields = f.read().rsplit(")", 1)[1].split()
        now[name] = (int(fields[11]) + int(fields[12])) / TICK
    return now


def cpu_since(before, pids):
    after = cpu_now(pids)
    return {name: round(after[name] - before[name], 3) for name in after}


def open_ws(url, proxy, ca):
    tls = ssl.create_default_context(cafile=ca) if url.startswith("wss:") else None
    return connect(
        url,
        proxy=None if proxy == "-" else proxy,
        ssl=tls,
        compression=None,
        max_size=None,
        ping_interval=None,
        open_timeout=30,
    )


async def rate(url, proxy, ca, size, conns, window, seconds):
    payload = os.urandom(size)
    counted = [0]
    state = {"counting": False, "done": False}

    async def one():
        async with open_ws(url, proxy, ca) as ws:
            slots = asyncio.Semaphore(window)

            async def sender():
                while not state["done"]:
                    await slots.acquire()
                    await ws.send(payload)

            async def receiver():
                while True:
                    got = await ws.recv()
                    if len(got) != size:
                        raise RuntimeError(f"echo of {len(got)} bytes, sent {size}")
                    if state["counting"]:
                        counted[0] += 1
                    slots.release()

            tasks = [asyncio.create_task(sender()), asyncio.create_task(receiver())]
            await stop.wait()
            for t in tasks:
                t.cancel()
            failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
            if failed:
                raise failed[0].exception()

    stop = asyncio.Event()
    workers = [asyncio.create_task(one()) for _ in range(conns)]
    await asyncio.sleep(WARMUP)
    pids = watched()
    before = cpu_now(pids)
    state["counting"] = True
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    state["counting"] = False
    elapsed = time.perf_counter() - start
    cpu = cpu_since(before, pids)
    state["done"] = True
    stop.set()
    await asyncio.gather(*workers)
    return {"messages": counted[0], "seconds": elapsed, "rate": counted[0] / elapsed, "cpu": cpu}


async def latency(url, proxy, ca, size, seconds):
    payload = os.urandom(size)
    samples = []
    async with open_ws(url, proxy, ca) as ws:
        warm_until = time.perf_counter() + WARMUP
        while time.perf_counter() < warm_until:
            await ws.send(payload)
            await ws.recv()
        pids = watched()
        before = cpu_now(pids)
        start = time.perf_counter()
        end = start + seconds
        while True:
            t0 = time.perf_counter_ns()
            await ws.send(payload)
            got = await ws.recv()
            samples.append(time.perf_counter_ns() - t0)
            if len(got) != size:
                raise RuntimeError(f"echo of {len(got)} bytes, sent {size}")
            if time.perf_counter() >= end:
                break
        elapsed = time.perf_counter() - start
        cpu = cpu_since(before, pids)
    samples.sort()

    def pct(p):
        return samples[min(len(samples) - 1, int(p * len(samples)))] / 1000

    return {
        "messages": len(samples),
        "seconds": elapsed,
        "rate": len(samples) / elapsed,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "mean_us": sum(samples) / len(samples) / 1000,
        "cpu": cpu,
    }


def main():
    mode, url, proxy, ca = sys.argv[1:5]
    ca = None if ca == "-" else ca
    if mode == "rate":
        size, conns, window = (int(a) for a in sys.argv[5:8])
        result = rate(url, proxy, ca, size, conns, window, float(sys.argv[8]))
    else:
        result = latency(url, proxy, ca, int(sys.argv[5]), float(sys.argv[6]))
    try:
        print(json.dumps(asyncio.run(result)), flush=True)
    except Exception as e:  # the script records the failure in its table
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)


main()
