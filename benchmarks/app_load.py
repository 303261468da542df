"""Load on the demo: concurrent gradio_client users on loopback, each sending real recordings to /classify.

    python benchmarks/app_load.py [--model checkpoints/] [--clients 20] [--requests 5] [--recording FILE]

Serves ``python app.py`` on a free loopback port (the page's own queue: two classifications
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
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
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


@contextlib.contextmanager
def serve_app(model: str | None = None, start_timeout_s: float = 300.0) -> Iterator[str]:
    """``python app.py`` (the program, as people start it) on a free loopback port; yields its URL once it answers."""
    port = free_port()
    command = [sys.executable, str(REPO_ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a server that logs much never blocks on it
    server = subprocess.Popen(command + (["--model", model] if model else []), cwd=REPO_ROOT,
                              stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if server.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"app.py stopped at start-up (exit {server.returncode}): {log.read()[-2000:]}")
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"app.py did not answer on {url} within {start_timeout_s:.0f} s") from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    answers: list[dict] = field(default_factory=list)  # each answered request's label output, as gradio returns it
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
                result.answers.append(label)

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
    with serve_app(args.model) as url:
        print(f"{os.cpu_count()} CPU cores; models: {args.model or 'app.py default'}; "
              f"{args.clients} clients x {args.requests} requests of {args.recording.name}")
        result = run_load(url, args.recording, args.clients, args.requests, args.timeout)
    print(result.summary())
    for failure in result.failures:
        print("FAILED", failure)
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
