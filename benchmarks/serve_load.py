"""Load test of `dgiqa serve`, against `dgiqa score` processes and an in-process Scorer, in one run.

    python benchmarks/serve_load.py --clients 4 --requests 40 --crops 4 --device cpu

Makes ``--images`` synthetic JPEGs and stand-in weights (a network's speed does
not depend on its weights), starts ``dgiqa serve`` on a free loopback port
(127.0.0.1 only: this script never sends a request elsewhere), waits until it
is ready, then ``--clients`` threads post pictures (raw bodies, cycling over
the images) until ``--requests`` are answered or ``--seconds`` have passed,
whichever comes first. Then, in the same run and on the same pictures:

  (a) ``dgiqa score PICTURE`` as one process per picture (what a caller without
      a server pays: start-up and model load each time), over ``--cli-pictures``;
  (b) an in-process ``Scorer`` loaded once, scoring the requests' pictures one
      after the other (model loading outside the timing).

Prints pictures/s of each flow and its ratio to (b), the server's p50/p95/p99
latency, answers by HTTP status, the server's resident memory before and after
the load, and the largest difference between the server's and (b)'s scores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from throughput import make_jpegs, standin_weights  # noqa: E402  (the same pictures and weights as there)

from dgiqa_cli.inference.scorer import Scorer  # noqa: E402

HOST = "127.0.0.1"  # loopback only, always


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def resident_mib(pid: int) -> float:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def wait_ready(url: str, server: subprocess.Popen, limit: float = 600) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"dgiqa serve did not get ready (exit code {server.poll()})")
        time.sleep(0.2)


def load(url: str, pictures: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    """``clients`` threads posting pictures until ``requests`` answers or ``seconds``; latencies and statuses."""
    order = itertools.count()
    lock = threading.Lock()
    latencies, statuses, scores = [], Counter(), {}
    deadline = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            while time.monotonic() < deadline:
                with lock:
                    i = next(order)
                if i >= requests:
                    return
                started = time.perf_counter()
                try:
                    answer = http.post(
                        "/v1/score", params={"name": f"p{i % len(pictures)}"}, content=pictures[i % len(pictures)],
                        headers={"Content-Type": "image/jpeg"},
                    )  # fmt: skip
                    status = answer.status_code
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                with lock:
                    latencies.append(time.perf_counter() - started)
                    statuses[status] += 1
                    if status == 200:
                        scores.setdefault(i % len(pictures), answer.json()["score"])

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "latencies": latencies, "statuses": statuses, "scores": scores}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--requests", type=int, default=40, help="requests in all, at most (default 40)")
    parser.add_argument("--seconds", type=float, default=300, help="load duration, at most (default 300)")
    parser.add_argument("--images", type=int, default=4, help="distinct pictures (default 4)")
    parser.add_argument("--cli-pictures", type=int, default=None, help="pictures for (a); default: --images")
    parser.add_argument("--depth-model", default="vits", choices=["vits", "vitb", "vitl"])
    parser.add_argument("--crops", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="torch", choices=["auto", "torch", "openvino"])
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--max-batch", type=int, default=None, help="the server's (default: its own)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if min(args.clients, args.requests, args.images) < 1 or not 0 < args.seconds <= 3600:
        parser.error("--clients, --requests and --images must be at least 1; --seconds in (0, 3600]")

    with tempfile.TemporaryDirectory(prefix="dgiqa-serve-load-") as tmp:
        folder = Path(tmp)
        print("making pictures and stand-in weights ...", file=sys.stderr)
        paths = make_jpegs(folder, args.images, size=(480, 640))
        pictures = [Path(p).read_bytes() for p in paths]
        dgiqa_weights, depth_weights = standin_weights(folder, args.depth_model)
        options = ["--weights", str(dgiqa_weights), "--depth-model", args.depth_model]
        options += ["--depth-weights", str(depth_weights), "--crops", str(args.crops), "--device", args.device]
        options += ["--backend", args.backend, "--precision", args.precision]
        env = dict(os.environ, DGIQA_CACHE=str(folder / "cache"))

        # The server under load.
        port = free_port()
        url = f"http://{HOST}:{port}"
        serve = [sys.executable, "-m", "dgiqa_cli", "serve", *options, "--host", HOST, "--port", str(port), "-q"]
        serve += ["--max-wait-ms", str(args.max_wait_ms)]
        serve += ["--max-batch", str(args.max_batch)] if args.max_batch else []
        log = open(folder / "serve.log", "w")  # noqa: SIM115  (a pipe nobody reads could fill and stall it)
        server = subprocess.Popen(serve, env=env, stderr=log)
        try:
            try:
                wait_ready(url, server)
            except SystemExit:
                print((folder / "serve.log").read_text()[-3000:], file=sys.stderr)
                raise
            rss_before = resident_mib(server.pid)
            print(f"load: {args.clients} clients, {args.requests} requests at most ...", file=sys.stderr)
            served = load(url, pictures, args.clients, args.requests, args.seconds)
            rss_after = resident_mib(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server_exit = server.wait(timeout=120)
            log.close()
        answered = len(served["latencies"])

        # (a) one `dgiqa score` process per picture.
        cli_count = args.cli_pictures or args.images
        print(f"(a) dgiqa score, one process per picture, {cli_count} pictures ...", file=sys.stderr)
        started = time.perf_counter()
        for path in itertools.islice(itertools.cycle(paths), cli_count):
            run = [sys.executable, "-m", "dgiqa_cli", "score", path, *options, "--json", "-q"]
            subprocess.run(run, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cli_seconds = time.perf_counter() - started

        # (b) in-process Scorer, the same pictures as the requests, one after the other.
        print(f"(b) in-process Scorer, {answered} pictures ...", file=sys.stderr)
        scorer = Scorer(
            dgiqa_weights, depth_model=args.depth_model, depth_weights=depth_weights, crops=args.crops,
            device=args.device, backend=args.backend, precision=args.precision,
        )  # fmt: skip
        scorer.score(pictures[0])  # warm-up, as the server's
        started = time.perf_counter()
        reference = {}
        for i in range(answered):
            score = scorer.score(pictures[i % len(pictures)]).score
            reference.setdefault(i % len(pictures), score)
        scorer_seconds = time.perf_counter() - started

    rate = {
        "serve": answered / served["seconds"],
        "dgiqa score processes": cli_count / cli_seconds,
        "in-process Scorer": answered / scorer_seconds,
    }
    latencies = np.array(served["latencies"]) * 1000
    difference = max((abs(s - reference[k]) for k, s in served["scores"].items()), default=float("nan"))
    results = {
        "command": " ".join(["python", "benchmarks/serve_load.py", *(argv or sys.argv[1:])]),
        "clients": args.clients,
        "requests_answered": answered,
        "pictures_per_second": rate,
        "ratio_to_in_process_scorer": {k: v / rate["in-process Scorer"] for k, v in rate.items()},
        "latency_ms": {q: float(np.percentile(latencies, int(q[1:]))) for q in ("p50", "p95", "p99")},
        "answers_by_status": {str(k): v for k, v in served["statuses"].items()},
        "server_rss_mib": {"before": rss_before, "after": rss_after},
        "server_exit_code": server_exit,
        "max_score_difference": difference,
    }
    print(f"\n{'flow':<24}{'pictures':>9}{'seconds':>9}{'pictures/s':>12}{'x Scorer':>10}")
    for flow, count, seconds in (
        ("serve", answered, served["seconds"]),
        ("dgiqa score processes", cli_count, cli_seconds),
        ("in-process Scorer", answered, scorer_seconds),
    ):
        print(f"{flow:<24}{count:>9}{seconds:>9.1f}{rate[flow]:>12.3f}{rate[flow] / rate['in-process Scorer']:>10.2f}")
    p = results["latency_ms"]
    print(f"\nserve latency: p50 {p['p50']:.0f} ms, p95 {p['p95']:.0f} ms, p99 {p['p99']:.0f} ms")
    print(f"answers by status: {dict(served['statuses'])}")
    print(f"server RSS: {rss_before:.0f} MiB before the load, {rss_after:.0f} MiB after; exit code {server_exit}")
    print(f"largest |serve - Scorer| score difference: {difference:.2e}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if server_exit == 0 and set(served["statuses"]) == {200} else 1


if __name__ == "__main__":
    raise SystemExit(main())
