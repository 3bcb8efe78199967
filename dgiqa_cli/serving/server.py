"""Running the app with uvicorn, and stopping it gracefully.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and waits up to
``grace`` seconds for the requests already received; meanwhile the batcher
scores what is queued without waiting for batches to fill. The process then
exits 0: a graceful stop is a success, not a death by signal (uvicorn would
raise the signal again once stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import uvicorn
from fastapi import FastAPI


class DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the batcher to drain as soon as a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, app: FastAPI):
        super().__init__(config)
        self.batcher = app.state.batcher
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self):
        """SIGINT and SIGTERM stop the server; unlike uvicorn's, the signal is not raised again afterwards."""
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig, frame) -> None:
        if self.loop is not None and not self.should_exit:
            self.loop.call_soon_threadsafe(self.batcher.drain)  # a signal handler takes no locks
        super().handle_exit(sig, frame)


def run_server(app: FastAPI, host: str, port: int, grace: float, log_level: str = "info") -> None:
    """Serve ``app`` until SIGTERM or Ctrl-C, then answer what was received (``grace`` seconds at most)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=grace,
        server_header=False,
        lifespan="on",
    )
    DrainingServer(config, app).run()
