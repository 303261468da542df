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

``--request-cost`` measures the demo as a program, one request at a time: it serves ``python app.py`` three times on
loopback ports, as of ``--baseline`` (default: the commit before issue 35's numpy plots and event detector; that
app.py alone, from ``git show``, in a temporary folder, so it runs on today's installed library), and this app.py
without a detector (``--detector none``) and with the event detector (``--detector``, default
checkpoints/sprsound-events), all with the same ``--model``. Each server classifies with the torch threads today's
app.py picks for itself (one on 2 cores; the baseline, which picked none, gets as many through OMP_NUM_THREADS).
After one warm-up request each, it sends ``--repeats`` requests to each server's ``/classify`` with gradio_client
(upload, analysis, both images, their download), taking turns between the servers so that a background load hits
all alike, and prints for each the median CPU time the server process used for a request (its /proc times, children
included) and the median wall time the client saw, and their ratio to the baseline's. Until 2026-12-07 this mode
timed the request's work in this process instead (one torch thread, the analysis and the PNG encoding, no server);
measured that way, with a development detector on 2 cores shared with a training run (benchmarks/RESULTS.md):
320 ms of CPU per request at 43d9350, 164 ms now without a detector, 120 ms with one.
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
              started: list | None = None, app_dir: Path = REPO_ROOT,
              env: dict[str, str] | None = None) -> Iterator[str]:
    """``python app.py`` (the program, as people start it) on a free loopback port; yields its URL once it answers.
    ``started``: a list the server's ``Popen`` is appended to. ``app_dir``: the folder of the app.py to run (its
    working directory); ``env``: variables set for the server on top of this process's environment."""
    port = free_port()
    command = [sys.executable, str(app_dir / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a server that logs much never blocks on it
    command += (["--model", model] if model else []) + (["--detector", detector] if detector else [])
    server = subprocess.Popen(command, cwd=app_dir, env={**os.environ, **env} if env else None,
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


def _proc_stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name: [0] state, [1] parent pid, [11:15] utime, stime, cutime,
    cstime (clock ticks)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` and its descendants have used so far: each live one's own times and
    those of its children that have ended and been waited for; NaN where /proc does not tell."""
    try:
        root = _proc_stat(pid)
    except (OSError, IndexError):
        return float("nan")
    children: dict[int, list[list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = _proc_stat(entry.name)
                children.setdefault(int(fields[1]), []).append([entry.name, *fields])
            except (OSError, IndexError, ValueError):
                continue  # ended while we looked
    ticks, pending = 0, [[str(pid), *root]]
    while pending:
        process = pending.pop()
        ticks += sum(int(value) for value in process[12:16])
        pending += children.get(int(process[0]), [])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    name: str
    url: str
    pid: int
    runs: list[tuple[float, float]] = field(default_factory=list)  # (server CPU s, client wall s) per request


def request_cost(model: str | None, detector: str | None, recording: Path, baseline: str, repeats: int,
                 timeout_s: float = 300.0) -> str:
    """One /classify request's server CPU time and client wall time, median of ``repeats``, for app.py at ``baseline``
    and now without and with the event detector, each served as a program (see the module docstring); the report as
    text."""
    from gradio_client import Client, handle_file

    spec = model or os.environ.get("RESPSTF_MODEL") or str(REPO_ROOT / "checkpoints")
    detector = detector or str(REPO_ROOT / "checkpoints" / "sprsound-events")
    threads = max(1, (os.cpu_count() or 1) // 2)  # app.py: cpu_count // CONCURRENCY (2 classifications at a time)
    source = subprocess.run(["git", "show", f"{baseline}:app.py"], cwd=REPO_ROOT, capture_output=True, text=True,
                            check=True).stdout
    base_name = f"app.py@{baseline}"
    with tempfile.TemporaryDirectory(prefix=f"app-at-{baseline}-") as folder, contextlib.ExitStack() as stack:
        Path(folder, "app.py").write_text(source)
        variants = [(base_name, dict(app_dir=Path(folder), env={
                        "OMP_NUM_THREADS": str(threads),
                        "RESPSTF_DATA_DIR": str(DATA_DIR)})),  # its examples from the data folder, as today's
                    ("now, no detector", dict(detector="none"))]
        if detector != "none":
            shown = Path(detector).resolve()
            shown = shown.relative_to(REPO_ROOT) if shown.is_relative_to(REPO_ROOT) else detector
            variants.append((f"now, detector {shown}", dict(detector=detector)))
        servers = []
        for name, options in variants:
            started: list[subprocess.Popen] = []
            url = stack.enter_context(serve_app(spec, started=started, **options))
            servers.append(Server(name, url, started[0].pid))
        clients = {server.name: Client(server.url, verbose=False) for server in servers}

        def request(server: Server) -> tuple[float, float]:
            cpu, wall = process_tree_cpu_s(server.pid), time.perf_counter()
            job = clients[server.name].submit(handle_file(str(recording)), api_name="/classify")
            label = job.result(timeout=timeout_s)[0]
            wall, cpu = time.perf_counter() - wall, process_tree_cpu_s(server.pid) - cpu
            if not label.get("confidences"):
                raise ValueError(f"{server.name}: answer without class probabilities: {label}")
            return cpu, wall

        for server in servers:
            request(server)  # warm-up
        for _ in range(repeats):
            for server in servers:
                server.runs.append(request(server))
    base_cpu = np.median([cpu for cpu, _ in servers[0].runs])
    base_wall = np.median([wall for _, wall in servers[0].runs])
    lines = [f"one /classify request for {recording.name} ({sf_duration(recording):.2f} s), each app.py served on "
             f"loopback, {os.cpu_count()} CPU cores, torch threads {threads}, median of {repeats} (alternated), "
             f"models: {spec}",
             f"{'':44s} {'CPU ms':>8s} {'wall ms':>8s} {'CPU ratio':>10s} {'wall ratio':>10s}   "
             f"(CPU: the server's; wall: the client's)"]
    for server in servers:
        cpu, wall = np.median([c for c, _ in server.runs]), np.median([w for _, w in server.runs])
        lines.append(f"{server.name[:44]:44s} {1000 * cpu:8.1f} {1000 * wall:8.1f} {cpu / base_cpu:10.2f} "
                     f"{wall / base_wall:10.2f}")
    return "\n".join(lines)


def sf_duration(path: Path) -> float:
    import soundfile

    return soundfile.info(str(path)).duration


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="as app.py --model (default: app.py's default)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=5, help="requests per client")
    parser.add_argument("--detector", default=None,
                        help="as app.py --detector (default: app.py's default; with --request-cost "
                             "checkpoints/sprsound-events, 'none' to leave that server out)")
    parser.add_argument("--recording", type=Path, default=None,
                        help=f"default: {DEFAULT_RECORDING.name}, with --request-cost {COST_RECORDING.name}")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one request may take")
    parser.add_argument("--request-cost", action="store_true", help="time one served request against --baseline")
    parser.add_argument("--baseline", default=BASELINE_REV, help="commit of the app.py to compare with")
    parser.add_argument("--repeats", type=int, default=10, help="requests per variant with --request-cost")
    args = parser.parse_args(argv)
    args.recording = args.recording or (COST_RECORDING if args.request_cost else DEFAULT_RECORDING)
    if not args.recording.is_file():
        print(f"recording {args.recording} not found; pass --recording or set RESPSTF_DATA_DIR.")
        return 1
    if args.request_cost:
        print(request_cost(args.model, args.detector, args.recording, args.baseline, args.repeats, args.timeout))
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
