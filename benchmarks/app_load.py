"""Load on the demo: concurrent gradio_client users on loopback, each sending real recordings to /classify.

    python benchmarks/app_load.py [--model checkpoints/] [--clients 20] [--requests 5] [--recording FILE]

Serves app.py in this process on a free loopback port (the page's own queue: two classifications
at a time), then starts ``--clients`` clients at once; each sends ``--requests`` requests one after
another and waits for the full answer (label, both images downloaded, timeline rows). Prints the
latency percentiles a user sees (queueing included), the throughput and every failure.

Measured on the 2-core dev machine (no GPU, idle), the four bundled checkpoints, the 9.2 s recording
below (benchmarks/RESULTS.md): 20 users x 5 requests: 100 requests in 82.4 s (1.21/s), 0 failures,
p50 15.72 s, p95 17.59 s (two at a time, so about 1.6 s per request: windows, record model, two plots;
the rest of a user's wait is the queue).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("RESPSTF_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
# A real 9.2 s train recording with Normal and Fine Crackle events.
DEFAULT_RECORDING = DATA_DIR / "sprsound" / "train_wav" / "40638274_9.7_1_p1_1789.flac"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")

    def summary(self) -> str:
        done = len(self.latencies_s)
        return (f"{done} requests in {self.wall_s:.1f} s ({done / self.wall_s:.2f}/s), {len(self.failures)} failures; "
                f"latency p50 {self.percentile(50):.2f} s, p95 {self.percentile(95):.2f} s, "
                f"max {max(self.latencies_s, default=float('nan')):.2f} s")


def run_load(url: str, recording: Path, clients: int, requests_per_client: int, timeout_s: float) -> LoadResult:
    """``clients`` concurrent users, each sending ``requests_per_client`` requests; every request bounded by ``timeout_s``."""
    from gradio_client import Client, handle_file

    result = LoadResult()
    lock = threading.Lock()
    start_together = threading.Barrier(clients)

    def user(index: int) -> None:
        try:
            client = Client(url, verbose=False)
        except Exception as err:  # a failed connection is a result of the run, not a crash of it
            with lock:
                result.failures.append(f"client {index}: connect: {type(err).__name__}: {err}")
            start_together.abort()
            return
        try:
            start_together.wait(timeout=timeout_s)
        except threading.BrokenBarrierError:
            pass  # another client failed to connect: go on, its failure is recorded
        for request in range(requests_per_client):
            started = time.perf_counter()
            try:
                label = client.submit(handle_file(str(recording)), api_name="/classify").result(timeout=timeout_s)[0]
                if not label.get("confidences"):
                    raise ValueError(f"answer without class probabilities: {label}")
            except Exception as err:
                with lock:
                    result.failures.append(f"client {index} request {request}: {type(err).__name__}: {err}")
                continue
            with lock:
                result.latencies_s.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(user, range(clients)))
    result.wall_s = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="as app.py --model (default: app.py's default)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=5, help="requests per client")
    parser.add_argument("--recording", type=Path, default=DEFAULT_RECORDING)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one request may take")
    args = parser.parse_args(argv)
    if not args.recording.is_file():
        print(f"recording {args.recording} not found; pass --recording or set RESPSTF_DATA_DIR.")
        return 1
    sys.path.insert(0, str(REPO_ROOT))
    import app

    demo = app.RespSTFDemo(app.load_models(args.model or app.DEFAULT_MODEL))
    port = free_port()
    blocks = demo.build()
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        print(f"{os.cpu_count()} CPU cores; models: {', '.join(m.name for m in demo.models.values())}; "
              f"{args.clients} clients x {args.requests} requests of {args.recording.name}")
        result = run_load(f"http://127.0.0.1:{port}/", args.recording, args.clients, args.requests, args.timeout)
    finally:
        blocks.close()
    print(result.summary())
    for failure in result.failures:
        print("FAILED", failure)
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
