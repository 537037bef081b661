"""A small closed-loop HTTP load generator for loopback: P processes x T threads, each sending
its share of a fixed list of requests back to back and timing every one.

Counts are fixed (every request is prepared before the clock starts), so a run is bounded; each
request also has a timeout. Throughput is requests / wall time from the first send to the last
answer; latencies are per request, connect included (gunicorn's sync workers close every
connection, so each request opens one, for the baseline view as for ours).
"""

from __future__ import annotations

import http.client
import multiprocessing
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes
    headers: dict


@dataclass
class Result:
    seconds: float
    latencies: list[float]  # seconds, per request
    statuses: dict[int, int]

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


def run(base_url: str, requests: list[Request], *, processes: int = 2, threads: int = 4, timeout: float = 30) -> Result:
    url = urlsplit(base_url)
    lanes = processes * threads
    shares = [requests[i::lanes] for i in range(lanes)]
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(processes)
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_process,
            args=(url.hostname, url.port, shares[p * threads : (p + 1) * threads], barrier, queue, timeout),
            daemon=True,
        )
        for p in range(processes)
    ]
    for proc in procs:
        proc.start()
    parts = [queue.get(timeout=timeout * max(1, len(requests)) + 60) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
    errors = [p for p in parts if isinstance(p, str)]
    if errors:
        raise RuntimeError(errors[0])
    start = min(p["start"] for p in parts)
    end = max(p["end"] for p in parts)
    latencies = [x for p in parts for x in p["latencies"]]
    statuses: dict[int, int] = {}
    for p in parts:
        for status, count in p["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    return Result(end - start, latencies, statuses)


def _process(host, port, lanes, barrier, queue, timeout):
    try:
        results = [None] * len(lanes)
        barrier.wait(timeout=60)
        start = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes on Linux
        workers = [
            threading.Thread(target=_lane, args=(host, port, lane, results, i, timeout)) for i, lane in enumerate(lanes)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        end = time.monotonic()
        failed = [r for r in results if isinstance(r, str)]
        if failed:
            raise RuntimeError(failed[0])
        statuses: dict[int, int] = {}
        latencies = []
        for lane_latencies, lane_statuses in results:
            latencies.extend(lane_latencies)
            for status in lane_statuses:
                statuses[status] = statuses.get(status, 0) + 1
        queue.put({"start": start, "end": end, "latencies": latencies, "statuses": statuses})
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put(f"load generator failed: {type(exc).__name__}: {exc}")


def _lane(host, port, lane, results, index, timeout):
    latencies, statuses = [], []
    try:
        for req in lane:
            began = time.perf_counter()
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                conn.request(req.method, req.path, body=req.body, headers=req.headers)
                response = conn.getresponse()
                response.read()
            finally:
                conn.close()
            latencies.append(time.perf_counter() - began)
            statuses.append(response.status)
        results[index] = (latencies, statuses)
    except BaseException as exc:  # noqa: BLE001 - reported to the process
        results[index] = f"{type(exc).__name__}: {exc}"
