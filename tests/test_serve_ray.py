"""`dgiqa_cli.serving:app` on Ray Serve (a local Ray instance): the same app, batched by ``@serve.batch``.

One deployment start (Ray is slow to start on two cores): the application ``serve run dgiqa_cli.serving:app``
would deploy, built from the environment, answering through Ray Serve's proxy on a free loopback port.
"""

from __future__ import annotations

import concurrent.futures
import socket
import time
from pathlib import Path

import httpx
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

FIXTURES = Path(__file__).parent / "fixtures"
PICTURES = [FIXTURES / "synthetic_480x640.png", FIXTURES / "synthetic_600x400.png"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_instance(ray_cluster):
    """Ray Serve on the session's local Ray (conftest), shut down after the test; Ray itself stays up."""
    try:
        yield
    finally:
        serve.shutdown()


def test_serving_app_on_ray_serve_scores_like_scorer(ray_instance, standin_weights, scorer, monkeypatch):
    environment = {
        "DGIQA_WEIGHTS": str(standin_weights["model"]),
        "DGIQA_DEPTH_MODEL": "vits",
        "DGIQA_DEPTH_WEIGHTS": str(standin_weights["depth"]),
        "DGIQA_CROPS": "1",
        "DGIQA_DEVICE": "cpu",
        "DGIQA_BACKEND": "torch",
        "DGIQA_SERVE_MAX_BATCH": "4",
        "DGIQA_SERVE_MAX_WAIT_MS": "500",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    from dgiqa_cli import serving

    expected = {path.name: scorer.score(path).score for path in PICTURES}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(serving.app, name="dgiqa", route_prefix="/")  # returns once the replica is up (model loaded)

    deadline = time.monotonic() + 120
    while httpx.get(f"{url}/readyz", timeout=30).status_code != 200:  # the replica's warm-up picture
        assert time.monotonic() < deadline
        time.sleep(0.1)
    model = httpx.get(f"{url}/v1/model").json()
    assert model["settings"] == scorer.settings and model["max_batch"] == 4

    def upload(path: Path) -> httpx.Response:
        return httpx.post(
            f"{url}/v1/score", params={"name": path.name}, content=path.read_bytes(),
            headers={"Content-Type": "image/png"}, timeout=300,
        )  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(upload, PICTURES * 2))
    for path, answer in zip(PICTURES * 2, answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.json()["name"] == path.name and abs(answer.json()["score"] - expected[path.name]) < 1e-5
    bad = httpx.post(f"{url}/v1/score", content=b"not a picture", headers={"Content-Type": "image/png"})
    assert bad.status_code == 422 and bad.json()["error"].startswith("not an image")

    metrics = httpx.get(f"{url}/metrics").text  # one replica: its batches are all of them
    batches = float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("dgiqa_batch_size_count")))
    assert batches < 1 + 4  # the warm-up, then the four uploads in fewer batches than pictures (@serve.batch)
