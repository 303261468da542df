"""Load on the demo: concurrent gradio_client users on loopback, each sending real recordings to /classify; and the
CPU cost of one request, side by side with the app.py of an earlier commit.

    python benchmarks/app_load.py [--model checkpoints/] [--detector DIR] [--clients 20] [--requests 5] [--recording FILE]
    python benchmarks/app_load.py --request-cost [--model checkpoints/] [--detector DIR] [--baseline REV] [--repeats 10]

Serves ``python app.py`` on a free loopback port (the page's own queue: two classifications
at a time), then starts ``--clients`` clients at once; each sends ``--requests`` requests one after
another and waits for the full answer (label, both images downloaded, timeline rows). Prints the
latency percentiles a user sees (queueing included), the throughput and every failure.

Measured on the 2-core dev machine (no GPU, idle), the four bundled checkpoints, the 9.2 s recording
below (benchmarks/RESULTS.md): 20 users x 5 requests: 100 requests in 82.4 s (1.21/s), 0 failures,
p50 15.72 s, p95 17.59 s (two at a time, so about 1.6 s per request: windows, record model, two matplotlib
figures; the rest of a user's wait is the queue). With the plots drawn as numpy images (issue 35), on the same
machine while two training runs and a benchmark held its cores (load average ~6): 100 requests in 32.7 s
(3.06/s), p50 5.72 s, p95 8.04 s without a detector; with a development detector (``--detector``: its
timeline, no window sliding) 24-28 s (3.6-4.2/s), p50 4.3-4.7 s, p95 6.4-7.6 s, 0 failures; the server then
spends ~180 ms of CPU per request, the 20 clients of this process ~150 ms.

``--request-cost`` serves nothing: in this process, with one torch thread (as app.py serves on 2 cores), it times
what one request costs the server (analysis, both images, their PNG encoding as gradio does it) for app.py at
``--baseline`` (default: the commit before issue 35's numpy plots and event detector) and for this app.py without and
with the event detector, alternating them so that a background load hits all alike, and prints the median CPU time
(process time, all threads) and wall time of each and their ratio to the baseline's.
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
import types
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
# A real 15.36 s recording (record label CAS), the length the per-request CPU budget is for.
COST_RECORDING = DATA_DIR / "sprsound" / "example_original_wav" / "65101170_0.4_0_p2_3246.wav"
# app.py before issue 35 (two matplotlib figures per request, the timeline from sliding the task 1-2 model).
BASELINE_REV = "43d9350"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve_app(model: str | None = None, start_timeout_s: float = 300.0, detector: str | None = None,
              started: list | None = None) -> Iterator[str]:
    """``python app.py`` (the program, as people start it) on a free loopback port; yields its URL once it answers.
    ``started``: a list the server's ``Popen`` is appended to."""
    port = free_port()
    command = [sys.executable, str(REPO_ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a server that logs much never blocks on it
    command += (["--model", model] if model else []) + (["--detector", detector] if detector else [])
    server = subprocess.Popen(command, cwd=REPO_ROOT,
                              stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}/"
    if started is not None:
        started.append(server)
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


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; NaN where /proc does not tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def load_app_at(rev: str) -> types.ModuleType:
    """app.py as it was at commit ``rev``, imported as the module ``app_at_<rev>`` (it runs on today's library)."""
    source = subprocess.run(["git", "show", f"{rev}:app.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    module = types.ModuleType(f"app_at_{rev}")
    module.__file__ = str(REPO_ROOT / "app.py")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source.stdout, f"app.py@{rev}", "exec"), module.__dict__)
    return module


def request_cost(model: str | None, detector: str | None, recording: Path, baseline: str, repeats: int) -> str:
    """One request's CPU and wall time, median of ``repeats``, for app.py at ``baseline`` and now (see the module
    docstring); the report as text."""
    import torch
    from gradio.processing_utils import encode_pil_to_bytes
    from PIL import Image

    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO_ROOT))
    import app

    before = load_app_at(baseline)
    spec = model or app.DEFAULT_MODEL
    models = app.load_models(spec)
    demos = {f"app.py@{baseline}": before.RespSTFDemo(models), "now, no detector": app.RespSTFDemo(models)}
    found = app.load_event_detector(detector, spec)
    if found is not None:
        demos[f"now, detector {found.source}"] = app.RespSTFDemo(models, None, found)

    def request(demo) -> None:
        outputs = demo.outputs(demo.analyse(recording))
        for image in outputs[1:3]:
            if image is not None:
                encode_pil_to_bytes(Image.fromarray(image), "png")

    times: dict[str, list[tuple[float, float]]] = {name: [] for name in demos}
    for demo in demos.values():
        request(demo)  # warm-up
    for _ in range(repeats):
        for name, demo in demos.items():
            cpu, wall = time.process_time(), time.perf_counter()
            request(demo)
            times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
    base_cpu = np.median([cpu for cpu, _ in times[f"app.py@{baseline}"]])
    base_wall = np.median([wall for _, wall in times[f"app.py@{baseline}"]])
    lines = [f"one /classify request's work for {recording.name} ({sf_duration(recording):.2f} s), {os.cpu_count()} CPU "
             f"cores, torch threads 1, median of {repeats} (alternated), models: {spec}",
             f"{'':44s} {'CPU ms':>8s} {'wall ms':>8s} {'CPU ratio':>10s} {'wall ratio':>10s}"]
    for name, runs in times.items():
        cpu, wall = np.median([c for c, _ in runs]), np.median([w for _, w in runs])
        lines.append(f"{name[:44]:44s} {1000 * cpu:8.1f} {1000 * wall:8.1f} {cpu / base_cpu:10.2f} {wall / base_wall:10.2f}")
    return "\n".join(lines)


def sf_duration(path: Path) -> float:
    import soundfile

    return soundfile.info(str(path)).duration


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="as app.py --model (default: app.py's default)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=5, help="requests per client")
    parser.add_argument("--detector", default=None, help="as app.py --detector (default: app.py's default)")
    parser.add_argument("--recording", type=Path, default=None,
                        help=f"default: {DEFAULT_RECORDING.name}, with --request-cost {COST_RECORDING.name}")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one request may take")
    parser.add_argument("--request-cost", action="store_true", help="time one request against --baseline instead")
    parser.add_argument("--baseline", default=BASELINE_REV, help="commit of the app.py to compare with")
    parser.add_argument("--repeats", type=int, default=10, help="requests per variant with --request-cost")
    args = parser.parse_args(argv)
    args.recording = args.recording or (COST_RECORDING if args.request_cost else DEFAULT_RECORDING)
    if not args.recording.is_file():
        print(f"recording {args.recording} not found; pass --recording or set RESPSTF_DATA_DIR.")
        return 1
    if args.request_cost:
        print(request_cost(args.model, args.detector, args.recording, args.baseline, args.repeats))
        return 0
    servers: list[subprocess.Popen] = []
    with serve_app(args.model, detector=args.detector, started=servers) as url:
        print(f"{os.cpu_count()} CPU cores; models: {args.model or 'app.py default'}; detector: "
              f"{args.detector or 'app.py default'}; {args.clients} clients x {args.requests} requests of "
              f"{args.recording.name}")
        server_cpu, client_cpu = process_cpu_s(servers[0].pid), time.process_time()
        result = run_load(url, args.recording, args.clients, args.requests, args.timeout)
        server_cpu, client_cpu = process_cpu_s(servers[0].pid) - server_cpu, time.process_time() - client_cpu
    print(result.summary())
    done = max(len(result.latencies_s), 1)
    print(f"CPU per request: server {1000 * server_cpu / done:.0f} ms, the {args.clients} clients (this process) "
          f"{1000 * client_cpu / done:.0f} ms")
    for failure in result.failures:
        print("FAILED", failure)
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
