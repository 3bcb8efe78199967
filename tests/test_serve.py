"""`dgiqa serve`: a real uvicorn server on a free loopback port, real HTTP clients, a real browser.

Most tests share one server in a thread of this process, built on the session's ``scorer`` (so that the
model is loaded once); the shutdown and key tests start the real command, ``dgiqa serve``, in a
subprocess, since signals and exit codes belong to a process.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from dgiqa_cli.io import interrupts
from dgiqa_cli.io.images import ImageError, decode_image
from dgiqa_cli.serving import ServeSettings, create_app

FIXTURES = Path(__file__).parent / "fixtures"
PICTURES = [FIXTURES / "synthetic_480x640.png", FIXTURES / "synthetic_600x400.png"]
UPLOAD_MB = 2
KEY = "s3cret-key-for-tests"


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    with bound_socket() as sock:
        return sock.getsockname()[1]


class ThreadServer:
    """uvicorn serving ``app`` in a thread, on a socket bound here (so the port is known and ours)."""

    def __init__(self, app):
        self.app = app
        self.socket = bound_socket()
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:  # uvicorn sets it once it listens
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.app.state.batcher.drain()
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.socket.close()


def wait_ready(url: str, headers=None, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz", headers=headers, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process is None or process.poll() is None, process.stderr.read() if process else ""
        assert time.monotonic() < deadline, "the server did not get ready"
        time.sleep(0.1)


def metric(text: str, name: str, labels: str = "") -> float:
    """A sample's value from a Prometheus exposition (0 when absent)."""
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.fixture(scope="module")
def expected(scorer) -> dict[str, float]:
    """What ``Scorer.score`` gives for each fixture picture (fp32, PyTorch, one crop)."""
    return {path.name: scorer.score(path).score for path in PICTURES}


@pytest.fixture(scope="module")
def live(scorer):
    """The app on the session's scorer: batches of up to 4 (waiting up to 1 s for them), uploads up to 2 MB."""
    settings = ServeSettings(max_batch=4, max_wait_ms=1000, max_upload_mb=UPLOAD_MB, workers=2, timeout=300)
    with ThreadServer(create_app(scorer, settings)) as server:
        wait_ready(server.url)
        yield server


# -- scores -------------------------------------------------------------------------------------------------------


def test_concurrent_requests_get_the_scores_of_scorer_score(live, expected):
    """Four raw uploads at once and one multipart request of two: every score equals Scorer.score's (1e-5, fp32), and
    the pictures were scored in batches, not one by one."""
    before = httpx.get(f"{live.url}/metrics").text

    def upload(path: Path) -> httpx.Response:
        return httpx.post(
            f"{live.url}/v1/score",
            params={"name": path.name},
            content=path.read_bytes(),
            headers={"Content-Type": "image/png"},
            timeout=300,
        )

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        singles = list(pool.map(upload, PICTURES * 2))
        files = [("file", (p.name, p.read_bytes(), "image/png")) for p in PICTURES]
        several = httpx.post(f"{live.url}/v1/score", files=files, timeout=300)

    for path, response in zip(PICTURES * 2, singles, strict=True):
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["name"] == path.name and result["error"] is None
        assert abs(result["score"] - expected[path.name]) < 1e-5
        assert (result["width"], result["height"]) == ((640, 480) if "480x640" in path.name else (400, 600))
        assert result["crops"] == 1 and result["precision"] == "fp32" and result["backend"] == "torch"
        assert len(result["weights_sha256"]) == 64 and result["depth_model"] == "vits"
    assert several.status_code == 200
    results = several.json()["results"]
    assert [r["name"] for r in results] == [p.name for p in PICTURES]
    assert all(abs(r["score"] - expected[r["name"]]) < 1e-5 for r in results)

    after = httpx.get(f"{live.url}/metrics").text
    pictures = metric(after, "dgiqa_batch_size_sum") - metric(before, "dgiqa_batch_size_sum")
    batches = metric(after, "dgiqa_batch_size_count") - metric(before, "dgiqa_batch_size_count")
    assert pictures == 6 and batches < 6  # at least one batch held several pictures
    assert metric(after, "dgiqa_queue_depth") == 0


def truncated_jpeg() -> bytes:
    import cv2

    data = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()
    return data[: len(data) // 2]


def png_claiming(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming a huge picture, and nothing else (a decompression bomb's header)."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + len(ihdr).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")


@pytest.mark.parametrize(
    "kind, data",
    [
        ("empty body", b""),
        ("random bytes", np.random.default_rng(0).bytes(4096)),
        ("truncated JPEG", truncated_jpeg()),
        ("PNG header claiming 100,000 x 100,000", png_claiming(100_000, 100_000)),
    ],
)
def test_bad_pictures_get_422_with_the_decoders_reason_fast(live, kind, data):
    with pytest.raises(ImageError) as refused:
        decode_image(data, "bad")
    started = time.monotonic()
    response = httpx.post(
        f"{live.url}/v1/score", params={"name": "bad"}, content=data,
        headers={"Content-Type": "application/octet-stream"}, timeout=30,
    )  # fmt: skip
    assert time.monotonic() - started < 5
    assert response.status_code == 422
    assert response.json()["error"] == refused.value.reason
    assert response.json()["name"] == "bad" and response.json()["score"] is None


def raw_request(url: str, head: bytes, body_chunks) -> bytes:
    """Send a request by hand (headers that lie, chunked bodies) and return what the server answers first."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:  # the server answered and closed before the body ended: read what it said
            pass
        return sock.recv(65536)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_uploads_over_the_limit_get_413_fast_and_lies_do_not_help(live, expected):
    limit = UPLOAD_MB * 1024 * 1024
    head = b"POST /v1/score HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
    timings = {}

    started = time.monotonic()  # a declared size over the limit: refused before the body is read
    answer = raw_request(live.url, head + b"Content-Length: %d\r\n\r\n" % (limit * 50), [b"x" * 1024])
    timings["declared"] = time.monotonic() - started
    assert status_of(answer) == 413

    started = time.monotonic()  # no size declared (chunked): refused once the bytes read pass the limit
    chunk = b"y" * 65536
    chunks = (b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2 * limit // len(chunk)))
    answer = raw_request(live.url, head + b"Transfer-Encoding: chunked\r\n\r\n", chunks)
    timings["chunked"] = time.monotonic() - started
    assert status_of(answer) == 413 and b"upload too large (the limit is 2 MB" in answer

    started = time.monotonic()  # a Content-Length smaller than the body: only the declared bytes are read
    answer = raw_request(live.url, head + b"Content-Length: 16\r\n\r\n", [b"z" * (3 * limit)])
    timings["lying"] = time.monotonic() - started
    assert status_of(answer) in (400, 422)  # uvicorn refuses the rest as a malformed request, or we refuse 16 bytes

    big = httpx.post(f"{live.url}/v1/score", files=[("file", ("big.png", b"\0" * (limit + 1), "image/png"))])
    assert big.status_code == 413  # its size declared: refused unread, in FastAPI's words (plain text)
    assert max(timings.values()) < 5, timings

    # ... and the server keeps serving.
    path = PICTURES[0]
    response = httpx.post(
        f"{live.url}/v1/score", content=path.read_bytes(), headers={"Content-Type": "image/png"}, timeout=300
    )
    assert response.status_code == 200 and abs(response.json()["score"] - expected[path.name]) < 1e-5


def test_a_full_queue_answers_503_and_a_slow_request_504(scorer):
    """One picture may wait (--max-queue 1) and batches of two never fill (10-minute wait): a second picture
    is refused at once with Retry-After, the first is answered 504 at --timeout; bad input still gets 422."""
    settings = ServeSettings(max_batch=2, max_wait_ms=600_000, max_queue=1, timeout=3)
    path = PICTURES[0]
    png = {"Content-Type": "image/png"}
    with ThreadServer(create_app(scorer, settings)) as server, concurrent.futures.ThreadPoolExecutor(1) as pool:
        wait_ready(server.url)
        started = time.monotonic()
        first = pool.submit(httpx.post, f"{server.url}/v1/score", content=path.read_bytes(), headers=png, timeout=60)
        while metric(httpx.get(f"{server.url}/metrics").text, "dgiqa_queue_depth") < 1:
            assert time.monotonic() - started < 30 and not first.done()
            time.sleep(0.02)
        second = httpx.post(f"{server.url}/v1/score", content=path.read_bytes(), headers=png)
        assert second.status_code == 503 and second.headers["retry-after"] == "1" and "busy" in second.json()["error"]
        assert first.result().status_code == 504 and "not scored within 3 s" in first.result().json()["error"]
        assert 3 <= time.monotonic() - started < 30
        assert metric(httpx.get(f"{server.url}/metrics").text, "dgiqa_queue_depth") == 0
        assert httpx.post(f"{server.url}/v1/score", content=b"\0" * 64, headers=png).status_code == 422


def test_other_content_types_are_refused_and_no_url_is_fetched(live):
    as_json = {"Content-Type": "application/json"}
    answer = httpx.post(f"{live.url}/v1/score", content=b'{"url": "http://127.0.0.1:9/x.png"}', headers=as_json)
    assert answer.status_code == 415 and "unsupported Content-Type" in answer.json()["error"]
    form = httpx.post(f"{live.url}/v1/score", data={"url": "http://127.0.0.1:9/x.png"})
    assert form.status_code == 415  # a URL field is not a picture; none is fetched


def test_model_health_and_metrics(live, scorer):
    model = httpx.get(f"{live.url}/v1/model").json()
    assert model["family"] == "dgiqa" and model["score_range"] == [0.0, 1.0] and model["lower_better"] is False
    assert model["settings"] == scorer.settings and model["max_batch"] == 4
    assert httpx.get(f"{live.url}/healthz").json() == {"status": "alive"}
    assert httpx.get(f"{live.url}/readyz").json() == {"status": "ready"}
    text = httpx.get(f"{live.url}/metrics").text
    assert metric(text, "dgiqa_requests_total", '{route="/v1/model",status="200"}') >= 1
    assert "process_resident_memory_bytes" in text and "dgiqa_request_seconds_bucket" in text
    assert {"/v1/score", "/v1/explain", "/v1/model"} <= set(httpx.get(f"{live.url}/openapi.json").json()["paths"])
    assert httpx.get(f"{live.url}/docs").status_code == 200


def test_explain_gives_the_panel_and_the_report(live, expected):
    path = PICTURES[1]
    report = httpx.post(
        f"{live.url}/v1/explain", params={"quality": "false", "name": path.name}, content=path.read_bytes(),
        headers={"Content-Type": "image/png", "Accept": "application/json"}, timeout=300,
    )  # fmt: skip
    assert report.status_code == 200, report.text
    assert report.json()["name"] == path.name and abs(report.json()["score"] - expected[path.name]) < 1e-5
    bad = httpx.post(f"{live.url}/v1/explain", content=b"not a picture", headers={"Content-Type": "image/png"})
    assert bad.status_code == 422 and bad.json()["error"]


# -- the page, in a real browser -------------------------------------------------------------------------------------


def test_the_page_scores_a_picked_file_in_headless_chromium(live, expected):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    path = PICTURES[0]
    problems, requested = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: requested.append(r.url))
        page.goto(live.url + "/")
        page.wait_for_selector("#model:has-text('dgiqa')")  # (selectors: the page's CSP forbids eval)
        page.set_input_files("#pick", str(path))
        page.wait_for_selector("#results tbody tr[data-state=done]", timeout=300_000)
        row = page.locator("#results tbody tr").first
        shown = float(row.locator("td.score").inner_text())
        assert abs(shown - expected[path.name]) < 1e-4  # the page shows 4 decimals
        assert row.locator("img.thumb").bounding_box()["width"] > 0
        with page.expect_response(lambda r: "/v1/explain" in r.url, timeout=300_000) as explained:
            row.click()
        assert explained.value.status == 200 and explained.value.header_value("content-type") == "image/png"
        page.wait_for_selector("#explain[data-state=shown]", timeout=60_000)  # the panel loaded in its <img>
        browser.close()
    assert problems == []
    assert requested and all(url.startswith((live.url + "/", "blob:")) for url in requested), requested


# -- the command: keys, refusal to listen openly, graceful shutdown ------------------------------------------------


def test_a_public_address_without_a_key_is_refused():
    from typer.testing import CliRunner

    from dgiqa_cli.cli import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"], env={"DGIQA_API_KEY": ""})
    assert result.exit_code == 2
    assert "--api-key" in result.output and "--no-auth" in result.output


def test_keys_and_sigterm_with_requests_in_flight(weight_args, expected):
    """`dgiqa serve` with a key and batches that would wait 10 minutes to fill: 401 without the right key;
    SIGTERM while three pictures wait in the queue answers all three (scored at once), then exits 0."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "dgiqa_cli", "serve", *weight_args, "--crops", "1", "--port", str(port)]
    command += ["--max-batch", "8", "--max-wait-ms", "600000"]
    # The server sends itself SIGTERM as the third picture joins the queue: all three are received, none
    # answered (the batch would wait 10 minutes to fill).
    env = dict(os.environ, DGIQA_API_KEY=KEY, **interrupts.at("queued", 3, "SIGTERM"))
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    key = {"Authorization": f"Bearer {KEY}"}
    try:
        wait_ready(url, process=server)
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes need no key
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": "Basic x"}):
            answer = httpx.post(f"{url}/v1/score", content=b"x", headers=headers)
            assert answer.status_code == 401 and "API key" in answer.json()["error"]
            assert httpx.get(f"{url}/metrics", headers=headers).status_code == 401
        assert httpx.get(f"{url}/v1/model", headers=key).status_code == 200
        assert os.readlink(f"/proc/{server.pid}/fd/2").startswith("pipe:")  # fd 2 is never sent to /dev/null

        pictures = [PICTURES[0], PICTURES[1], PICTURES[0]]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            answers = [
                pool.submit(
                    httpx.post,
                    f"{url}/v1/score",
                    params={"name": p.name},
                    content=p.read_bytes(),
                    headers={**key, "Content-Type": "image/png"},
                    timeout=600,
                )  # fmt: skip
                for p in pictures
            ]
            results = [a.result() for a in answers]
        assert server.wait(timeout=120) == 0
    finally:
        if server.poll() is None:
            server.kill()
    log = server.stderr.read()
    for path, answer in zip(pictures, results, strict=True):
        assert answer.status_code == 200, answer.text
        assert abs(answer.json()["score"] - expected[path.name]) < 1e-5
    assert "Traceback" not in log and "Shutting down" in log  # uvicorn's own lines reached stderr


def test_a_server_process_keeps_fd_2_while_pictures_decode():
    """keep_native_stderr() (what `dgiqa serve` calls) undoes the CLI's start-up silencing: a line written to
    fd 2 while a picture decodes is kept (the library itself never redirects fd 2: tests/test_side_effects.py)."""
    script = (
        "import os, threading\n"
        "from dgiqa_cli.io.images import decode_image\n"
        "from dgiqa_cli.io.native_stderr import keep_native_stderr, silence_native_stderr\n"
        "silence_native_stderr()\n"
        "keep_native_stderr()\n"
        "data = open(" + repr(str(PICTURES[0])) + ", 'rb').read()\n"
        "decoding = threading.Thread(target=lambda: [decode_image(data) for _ in range(20)])\n"
        "decoding.start()\n"
        "os.write(2, b'log line written while a picture decodes\\n')\n"
        "decoding.join()\n"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stderr == "log line written while a picture decodes\n", done.stderr


# -- memory --------------------------------------------------------------------------------------------------------


def resident_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


@pytest.mark.slow
@pytest.mark.benchmark  # three minutes on two busy cores: with the benchmark smoke runs (pytest -m benchmark)
def test_rss_stays_flat_over_1000_requests(weight_args):
    """1,000 requests to `dgiqa serve`: 950 refused uploads of every kind (422, 413) and model queries, and
    50 pictures scored (every 20th request). Resident memory after the last request stays within 30 MB of
    where it was after the first 200 (allocators and caches warm by then)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "dgiqa_cli", "serve", *weight_args, "--crops", "1", "--port", str(port)]
    server = subprocess.Popen([*command, "--max-upload-mb", "1"], stderr=subprocess.DEVNULL)
    bad = [b"", np.random.default_rng(1).bytes(8192), truncated_jpeg(), png_claiming(100_000, 100_000)]
    png = {"Content-Type": "image/png"}
    try:
        wait_ready(url, process=server)
        with httpx.Client(base_url=url, timeout=300) as client:
            for i in range(1000):
                if i == 200:
                    warm = resident_mb(server.pid)
                if i % 20 == 0:
                    path = PICTURES[i // 20 % 2]
                    response = client.post("/v1/score", content=path.read_bytes(), headers=png)
                    assert response.status_code == 200
                elif i % 7 == 0:
                    files = [("file", (f"b{j}", data, "image/png")) for j, data in enumerate(bad)]
                    assert client.post("/v1/score", files=files).status_code == 200
                elif i % 11 == 0:
                    assert client.post("/v1/score", content=b"\0" * (1024 * 1024 + 1)).status_code == 413
                elif i % 13 == 0:
                    assert client.get("/v1/model").status_code == 200
                else:
                    data = bad[i % len(bad)]
                    assert (
                        client.post("/v1/score", content=data, headers={"Content-Type": "image/png"}).status_code == 422
                    )
        final = resident_mb(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    print(f"RSS after 200 requests: {warm:.1f} MB, after 1000: {final:.1f} MB")
    assert final - warm < 30, (warm, final)


@pytest.mark.slow
@pytest.mark.benchmark
def test_load_benchmark_smoke(tmp_path):
    """benchmarks/serve_load.py end to end, CI-sized: its three flows, its table and its JSON."""
    report_path = tmp_path / "load.json"
    script = Path(__file__).parents[1] / "benchmarks" / "serve_load.py"
    options = ["--clients", "2", "--requests", "2", "--images", "1", "--crops", "1", "--json", str(report_path)]
    done = subprocess.run([sys.executable, str(script), *options], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "pictures/s" in done.stdout and "p50" in done.stdout
    report = json.loads(report_path.read_text())
    assert report["requests_answered"] == 2 and report["answers_by_status"] == {"200": 2}
    assert report["server_exit_code"] == 0 and report["max_score_difference"] < 1e-5
    assert report["ratio_to_in_process_scorer"]["in-process Scorer"] == 1
