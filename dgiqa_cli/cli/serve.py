"""``dgiqa serve``: one loaded model behind HTTP (FastAPI + uvicorn), or on Ray Serve with ``--ray``."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer
from rich.markup import escape

from dgiqa_cli.cli.common import QuietOpt, app, err, fail, setup_logging
from dgiqa_cli.cli.options import ScorerOptions, with_options
from dgiqa_cli.errors import EXIT_OK, EXIT_USAGE


@app.command()
@with_options()
def serve(
    *,
    options: ScorerOptions,
    host: Annotated[
        str, typer.Option(help="Address to listen on. Anything but loopback needs --api-key (or --no-auth).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    max_batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Pictures scored together at most. Default: 32 on a GPU, 1 on the CPU (bigger batches measured "
            "no faster there).",
            show_default=False,
        ),
    ] = None,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, help="How long a picture waits for others to fill its batch.")
    ] = 5.0,
    max_queue: Annotated[
        int, typer.Option(min=1, help="Pictures received and not yet answered, at most; beyond: 503 + Retry-After.")
    ] = 64,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds a request may take; beyond: 504.")] = 60.0,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest request body, enforced while it is read; beyond: 413.")
    ] = 50.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="DGIQA_API_KEY",
            help="Require `Authorization: Bearer KEY` on /v1/* and /metrics (compared in constant time).",
            show_default=False,
        ),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Allow a non-loopback --host without --api-key (anyone may score).")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Decoding threads. Default: 1 on the CPU, up to 16 on a GPU.", show_default=False),
    ] = None,
    grace: Annotated[
        float, typer.Option(min=0, help="On SIGTERM: seconds to answer the requests already received.")
    ] = 30.0,
    use_ray: Annotated[
        bool,
        typer.Option("--ray", help="Serve on Ray Serve (pip install 'dgiqa\\[serve-ray]'): replicas, GPUs, clusters."),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="With --ray: the cluster to join (auto, HOST:PORT). Default: a local one.", show_default=False
        ),
    ] = None,  # fmt: skip
    replicas: Annotated[int, typer.Option(min=1, help="With --ray: replicas, each with its own model.")] = 1,
    num_gpus_per_replica: Annotated[
        float | None,
        typer.Option(
            min=0, help="With --ray: GPUs per replica. Default: 1 if the cluster has GPUs, else 0.", show_default=False
        ),
    ] = None,  # fmt: skip
    quiet: QuietOpt = False,
) -> None:
    """Serve scores over HTTP: POST /v1/score, /v1/explain; GET /v1/model, /healthz, /readyz, /metrics, / (a page).

    The model is loaded once; requests arriving together are scored in one batch. Example:

      curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8000/v1/score
    """
    setup_logging(quiet)
    try:
        from dgiqa_cli.serving import ServeSettings, create_app
        from dgiqa_cli.serving.limits import is_loopback
        from dgiqa_cli.serving.server import run_server
    except ImportError as exc:
        raise fail(f"dgiqa serve needs its extra: pip install 'dgiqa[serve]' ({exc})", EXIT_USAGE) from None
    from dgiqa_cli.io.native_stderr import keep_native_stderr

    keep_native_stderr()  # the server's fd 2 is its log: nothing may redirect it while pictures decode
    try:
        settings = ServeSettings(
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_queue=max_queue,
            timeout=timeout,
            max_upload_mb=max_upload_mb,
            api_key=api_key or None,
            workers=workers,
            grace=grace,
        )
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    if not is_loopback(host) and settings.api_key is None and not no_auth:
        raise fail(
            f"--host {host} is reachable from other machines: give --api-key (or $DGIQA_API_KEY), or --no-auth "
            "to serve without one",
            EXIT_USAGE,
        )
    if use_ray:
        serve_on_ray(options.as_kwargs(), settings, host, port, ray_address, replicas, num_gpus_per_replica)
        raise typer.Exit(EXIT_OK)
    scorer = options.build()
    if not quiet:
        key = "API key required" if settings.api_key else "no API key"
        err.print(
            f"dgiqa serve: {escape(scorer.arch)} · {escape(scorer.model_name)} on {scorer.device}, "
            f"http://{escape(host)}:{port}/ ({key}; the API at /docs)",
            highlight=False,
        )
    run_server(create_app(scorer, settings), host, port, settings.grace, log_level="warning" if quiet else "info")
    raise typer.Exit(EXIT_OK)


def serve_on_ray(options: dict, settings, host: str, port: int, address, replicas: int, gpus: float | None) -> None:
    """Deploy on Ray Serve (its proxy listens on ``host:port``) and keep it up until SIGTERM or Ctrl-C."""
    try:
        from ray import serve as ray_serve

        from dgiqa_cli.inference import distributed
        from dgiqa_cli.serving.ray_serve import build_app
    except ImportError as exc:
        raise fail(f"--ray needs Ray Serve: pip install 'dgiqa[serve-ray]' ({exc})", EXIT_USAGE) from None
    if gpus is None:
        gpus = 1 if distributed.cluster_gpus(address) else 0
    if not gpus and options.get("device") == "auto":
        options["device"] = "cpu"
    distributed.connect(address)
    ray_serve.start(http_options={"host": host, "port": port})
    try:
        ray_serve.run(build_app(options, settings, replicas, gpus), name="dgiqa", route_prefix="/")
    except RuntimeError as exc:
        ray_serve.shutdown()
        raise fail(f"Ray Serve could not start dgiqa: {str(exc).strip().splitlines()[-1]}", 1) from None
    err.print(f"dgiqa serve --ray: {replicas} replica(s) at http://{escape(host)}:{port}/", highlight=False)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        ray_serve.shutdown()  # each replica answers what it holds (graceful_shutdown_timeout_s = --grace)
