"""Speed of ``convscope serve``: a forward pass with every layer's activations for
one drawing, over HTTP on 127.0.0.1, as the explorer page asks for it (the canvas
PNG as the body, ``?layers=all&encoding=base64``).

* sequential: 500 requests, one client, keep-alive — p50 / p99 (targets: ≤ 15 ms / ≤ 50 ms);
* 8 concurrent clients, each sending requests back to back (the server saturated):
  every answer must equal the sequential one (its raw JSON bytes are compared, so the
  client threads do not spend this machine's CPU parsing 200 kB answers); p50 and its
  ratio to the sequential p50;
* 8 clients drawing live: each sends a drawing every 50 ms (20 updates a second, a
  classroom of 8 drawing at once) — p50 and its ratio (target: not more than 3×);
* the same request with plain JSON lists (what a script gets by default) and with
  compact uint8 levels (``encoding=u8``), for reference.

The server runs in its own process (``python -m convscope serve --port 0``, 2 request
threads, 1 PyTorch thread per computation), once per ``--processes`` value, one after
the other in this run: forward worker processes (the default: one per core, at most
4) and ``0`` (forward passes batched in the server process), so the two are compared
side by side. The clients are threads of this process on the same machine, so on a
2-core machine they compete with the server for the CPU. The load average before and
after is printed: the machine is shared, so read the figures with it.

    python benchmarks/serve_speed.py [--requests 500] [--clients 8] [--processes default,0]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]


def drawing(seed: int = 0) -> bytes:
    """A 168×168 PNG like the explorer's pad sends: white strokes on black, RGBA."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGBA", (168, 168), (0, 0, 0, 255))
    draw = ImageDraw.Draw(image)
    points = [tuple(int(v) for v in rng.integers(24, 144, 2)) for _ in range(4)]
    draw.line(points, fill=(255, 255, 255, 255), width=12, joint="curve")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def start_server(processes: str = "default") -> tuple[subprocess.Popen, str, int]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    extra = [] if processes == "default" else ["--processes", processes]
    process = subprocess.Popen([sys.executable, "-m", "convscope", "serve", "--port", "0", "--workers", "2", *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = process.stdout.readline()
    match = re.search(r"http://([\d.]+):(\d+)/", line)
    if not match:
        process.kill()
        raise SystemExit(f"the server did not start: {line}{process.stderr.read()}")
    return process, match[1], int(match[2])


class Client:
    """One keep-alive connection."""

    def __init__(self, host: str, port: int) -> None:
        self.connection = http.client.HTTPConnection(host, port, timeout=30)

    def forward(self, body: bytes, encoding: str = "base64") -> tuple[float, bytes]:
        """``(seconds, the answer's raw JSON bytes)``: the concurrent clients compare the
        bytes with the sequential answer's (equal bytes, equal answer) instead of parsing
        each answer, so that 8 client threads parsing 200 kB JSON in this process do not
        take the CPU the server is measured on."""
        started = time.perf_counter()
        self.connection.request("POST", f"/api/forward?layers=all&encoding={encoding}", body, {"Content-Type": "image/png"})
        response = self.connection.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
        return elapsed, data


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def measure(args: argparse.Namespace, processes: str) -> dict:
    """Every figure of one server configuration."""
    process, host, port = start_server(processes)
    try:
        bodies = [drawing(seed) for seed in range(8)]
        client = Client(host, port)
        for body in bodies:  # warm up; the reference answers
            client.forward(body)
        reference = {i: client.forward(body)[1] for i, body in enumerate(bodies)}
        connection = http.client.HTTPConnection(host, port, timeout=30)
        connection.request("GET", "/api/health")
        workers = json.loads(connection.getresponse().read()).get("forward_processes", 0)

        times = [client.forward(bodies[i % len(bodies)])[0] for i in range(args.requests)]
        lists = [client.forward(bodies[0], "list")[0] for _ in range(100)]
        compact = [client.forward(bodies[0], "u8")[0] for _ in range(100)]

        results: list[tuple[int, float, bytes]] = []
        lock = threading.Lock()

        def worker(index: int, paced: float | None) -> None:
            own = Client(host, port)
            for j in range(args.per_client):
                which = (index + j) % len(bodies)
                started = time.perf_counter()
                elapsed, answer = own.forward(bodies[which])
                with lock:
                    results.append((which, elapsed, answer))
                if paced is not None:
                    time.sleep(max(0.0, paced - (time.perf_counter() - started)))

        def run_clients(paced: float | None) -> tuple[list[float], int]:
            results.clear()
            threads = [threading.Thread(target=worker, args=(i, paced)) for i in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wrong = sum(1 for which, _, answer in results
                        if answer != reference[which] and json.loads(answer) != json.loads(reference[which]))
            return [elapsed for _, elapsed, _ in results], wrong

        saturated, wrong_saturated = run_clients(None)
        paced, wrong_paced = run_clients(0.05)
    finally:
        process.terminate()
        process.wait(10)
    return {"workers": workers, "size": len(reference[0]), "times": times, "lists": lists, "compact": compact,
            "saturated": saturated, "wrong_saturated": wrong_saturated, "paced": paced, "wrong_paced": wrong_paced}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=60)
    parser.add_argument("--processes", default="default,0",
                        help="comma-separated --processes values of the server to measure, one after the other")
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs = [(value, measure(args, value)) for value in args.processes.split(",")]
    load_after = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores; load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"(1-minute; > {os.cpu_count()} means other work was running)")
    print(f"one drawing (168×168 PNG) → conversion + forward + every layer's activations, {runs[0][1]['size'] / 1e3:.0f} kB "
          "of JSON (base64 float32)")
    failed = False
    for value, r in runs:
        p50, p99 = percentile(r["times"], 50), percentile(r["times"], 99)
        how = (f"{r['workers']} forward worker processes" if r["workers"] else "forward passes batched in the server process")
        print(f"\n--processes {value}: {how}")
        print(f"sequential, {args.requests} requests:          p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   "
              f"(targets ≤ 15 / ≤ 50 ms: {'met' if p50 <= 15 and p99 <= 50 else 'NOT met'})")
        print(f"same, plain JSON lists (100 requests):     p50 {percentile(r['lists'], 50):6.2f} ms   "
              f"p99 {percentile(r['lists'], 99):6.2f} ms")
        print(f"same, compact u8 levels (100 requests):    p50 {percentile(r['compact'], 50):6.2f} ms   "
              f"p99 {percentile(r['compact'], 99):6.2f} ms")
        saturated, paced = r["saturated"], r["paced"]
        s50 = percentile(saturated, 50)
        print(f"{args.clients} clients back to back ({len(saturated)} req):   p50 {s50:6.2f} ms   "
              f"p99 {percentile(saturated, 99):6.2f} ms   ratio {s50 / p50:4.2f}×   answers equal to sequential: "
              f"{len(saturated) - r['wrong_saturated']}/{len(saturated)}")
        l50 = percentile(paced, 50)
        print(f"{args.clients} clients drawing at 20 Hz ({len(paced)} req): p50 {l50:6.2f} ms   "
              f"p99 {percentile(paced, 99):6.2f} ms   ratio {l50 / p50:4.2f}×   answers equal to sequential: "
              f"{len(paced) - r['wrong_paced']}/{len(paced)}   (target: ratio ≤ 3: {'met' if l50 / p50 <= 3 else 'NOT met'})")
        failed = failed or bool(r["wrong_saturated"] or r["wrong_paced"])
    if failed:
        raise SystemExit("concurrent answers differ from the sequential ones")


if __name__ == "__main__":
    main()
