"""``make bench`` triggerer density: N subscriptions in one process and one event loop, ours vs bare websockets clients.

The shape of a triggerer: one process, one event loop, N subscription triggers started together,
each with its own msg token and its own push log, for a 60 s window, against the sandbox pushing
2 trades per second on every socket. The baseline is N bare ``websockets`` clients in the same
shape that log in, subscribe, parse each push (the same JSON parser) and append it to their own
file, ping every 15 s, and at the end send ``cancel_subscribe_asset`` and ``logout`` and read
until the server's close (bounded), as ours does.

Measured per run: RSS per subscription (RSS 50 s in (5/6 of the window), minus the process's RSS before the first
subscription, over N), CPU per push (process CPU between 10 s and 55 s in, over the pushes the
server stamped in that interval), the longest event-loop stall over the whole run (start and end
included; a 10 ms ticker's lateness), and pushes delivered by the sandbox before its close but
missing from the files (the sandbox's own delivery log).

    python bench/density.py probe <ours|bare> <n> <window> <outdir>   (one run; used by bench/run.py)
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

#: bare clients whose server closed within the bound after logout (True) or not (False)
closed_in_time: list[bool] = []
#: fractions of the window: CPU per push is measured from 1/6 to 11/12 in (10 s to 55 s of 60), RSS at 5/6 (50 s)
STEADY = (1 / 6, 11 / 12)
RSS_AT = 5 / 6


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _bare(token: str, url: str, path: str, deadline: float, loads: Any) -> dict[str, Any]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from airflow_provider_multimarkets.messaging.frames import build_frame

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    seq = 0

    def frame(kind: str, data: dict[str, Any] | None = None) -> str:
        nonlocal seq
        seq += 1
        return build_frame(kind, token, seq, data=data)

    try:
        async with connect(url, compression=None, max_size=4 * 1024 * 1024, proxy=None) as ws:
            await ws.send(frame("login"))
            await ws.send(frame("subscribe_asset", {"tradeTypes": "2"}))

            async def pings() -> None:
                while True:
                    await asyncio.sleep(15)
                    await ws.send(frame("ping"))

            async def read() -> None:
                try:
                    while True:
                        data = await ws.recv(decode=False)
                        if loads(data).get("msgCode") == "trade":
                            os.write(fd, data + b"\n")
                except ConnectionClosed:
                    return

            pinger, reader = asyncio.ensure_future(pings()), asyncio.ensure_future(read())
            await asyncio.wait({reader}, timeout=max(deadline - time.time(), 0))
            pinger.cancel()
            if not reader.done():
                await ws.send(frame("cancel_subscribe_asset", {"tradeTypes": "2"}))
                await ws.send(frame("logout"))
                await asyncio.wait(
                    {reader}, timeout=float(os.environ.get("MM_BENCH_DRAIN", "5"))
                )  # until the close, bounded
                closed_in_time.append(reader.done())
                reader.cancel()
        return {"status": "success"}
    finally:
        os.close(fd)


async def _run(mode: str, tokens: list[str], url: str, outdir: Path, window: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stall = 0.0
    marks: dict[str, float] = {}
    running = True

    async def monitor() -> None:
        nonlocal stall
        while running:
            before = loop.time()
            await asyncio.sleep(0.01)
            late = loop.time() - before - 0.01
            if late > stall:
                stall = late
                marks["stall_at"] = time.time() - marks.get("t0", time.time())

    async def sampler(t0: float) -> None:
        await asyncio.sleep(max(t0 + STEADY[0] * window - time.time(), 0))
        marks["cpu1"], marks["t1"] = _cpu(), time.time()
        await asyncio.sleep(max(t0 + RSS_AT * window - time.time(), 0))
        marks["rss"] = _rss()
        await asyncio.sleep(max(t0 + STEADY[1] * window - time.time(), 0))
        marks["cpu2"], marks["t2"] = _cpu(), time.time()

    watcher = asyncio.ensure_future(monitor())
    await asyncio.sleep(0.05)
    t0 = marks["t0"] = time.time()
    deadline = t0 + window
    sampling = asyncio.ensure_future(sampler(t0))
    tasks = []
    if mode == "ours":
        from airflow_provider_multimarkets.operators.msg_subscribe import _first_event
        from airflow_provider_multimarkets.triggers.msg_subscribe import MultiMarketsMsgSubscribeTrigger

        for i, token in enumerate(tokens):  # as a triggerer creates them: one after the other, on its loop
            trigger = MultiMarketsMsgSubscribeTrigger(
                token=token, trade_types="2", output_path=str(outdir / f"{i}.jsonl"), deadline=deadline
            )
            tasks.append(asyncio.ensure_future(_first_event(trigger)))
    else:
        from airflow_provider_multimarkets.messaging.codec import bytes_loads

        loads = bytes_loads()
        for i, token in enumerate(tokens):
            tasks.append(asyncio.ensure_future(_bare(token, url, str(outdir / f"{i}.jsonl"), deadline, loads)))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await sampling
    running = False
    await watcher
    statuses: dict[str, int] = {}
    for result in results:
        key = result.get("status", "?") if isinstance(result, dict) else type(result).__name__
        statuses[key] = statuses.get(key, 0) + 1
    return {"stall": stall, "t0": t0, "end": time.time(), "statuses": statuses, **marks}


def probe(mode: str, n: int, window: float, outdir: Path) -> dict[str, Any]:
    import gc

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a socket and a file per subscription
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * n + 256)), hard))

    import websockets.asyncio.client  # noqa: F401 - loaded in a running triggerer: not part of the run

    import airflow_provider_multimarkets.messaging.client
    import airflow_provider_multimarkets.messaging.ws
    import airflow_provider_multimarkets.triggers.msg_subscribe  # noqa: F401
    from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook

    with MultiMarketsHook() as hook:  # tokens fetched before the run, not masked here (the run masks them)
        tokens = [str(hook.call("getMsgPushToken", {})) for _ in range(n)]
    conn = json.loads(os.environ["AIRFLOW_CONN_MULTIMARKETS_DEFAULT"])
    url = conn["extra"]["msg_ws_url"].replace("{appId}", str(conn["extra"]["company_id"]))
    gc.collect()
    base_rss = _rss()
    result = asyncio.run(_run(mode, tokens, url, outdir, window))
    t1_ms, t2_ms = result["t1"] * 1000, result["t2"] * 1000
    steady = 0
    files: list[list[int]] = []  # in the order the tokens were issued (the sandbox lists its streams so)
    for i in range(len(tokens)):
        path = outdir / f"{i}.jsonl"
        seqs = []
        if path.exists():
            for line in path.read_bytes().splitlines():
                try:
                    frame = json.loads(line)
                except ValueError:
                    continue
                seqs.append(int(frame.get("seqId", -1)))
                if t1_ms <= int(frame.get("timestamp", 0)) <= t2_ms:
                    steady += 1
        files.append(seqs)
    return {
        "mode": mode,
        "n": n,
        "rss_per_sub_kib": (result["rss"] - base_rss) / n / 1024,
        "cpu_per_push_us": (result["cpu2"] - result["cpu1"]) / max(steady, 1) * 1e6,
        "steady_pushes": steady,
        "stall_ms": result["stall"] * 1000,
        "stall_at_s": result.get("stall_at"),
        "statuses": result["statuses"],
        "files": files,
        "run_s": result["end"] - result["t0"],
        "bare_closed_in_time": f"{sum(closed_in_time)} of {len(closed_in_time)}" if closed_in_time else None,
    }


def masker_probe(n: int) -> dict[str, float]:
    """The secret masker's cost for ``n`` tokens: each added on the loop, one after the other (as each
    trigger did), and as now (one pattern for the documented token shape); the longest loop stall."""
    import uuid

    from airflow_provider_multimarkets import _compat

    async def measure(masked_on_loop: bool) -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        stall, running = 0.0, True

        async def monitor() -> None:
            nonlocal stall
            while running:
                before = loop.time()
                await asyncio.sleep(0.005)
                stall = max(stall, loop.time() - before - 0.005)

        watcher = asyncio.ensure_future(monitor())
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        tokens = [f"{uuid.uuid4()}push" for _ in range(n)]
        if masked_on_loop:
            for token in tokens:
                await _compat.amask_secret(token)
                await asyncio.sleep(0)  # the next trigger starts
        else:
            for token in tokens:
                _compat.mask_msg_token(token)  # what each subscription does now
                await asyncio.sleep(0)
        total = time.perf_counter() - started
        running = False
        await watcher
        return stall, total

    on_loop = asyncio.run(measure(True))
    masker = _compat._masker_function("_secrets_masker")
    if masker is not None:  # start the second measurement from an empty masker too
        masker().reset_masker()
    _compat._token_pattern_installed = False
    off_loop = asyncio.run(measure(False))
    return {
        "on_loop_stall_ms": on_loop[0] * 1000,
        "on_loop_total_s": on_loop[1],
        "off_loop_stall_ms": off_loop[0] * 1000,
        "off_loop_total_s": off_loop[1],
    }


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        out = probe(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5]))
    else:
        out = masker_probe(int(sys.argv[2]))
    print(json.dumps(out))
