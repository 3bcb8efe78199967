"""The same FastAPI app on Ray Serve, for more than one machine: replicas, GPUs, ``@serve.batch``.

Each replica loads its own :class:`~dgiqa_cli.inference.scorer.Scorer` and serves
:func:`~dgiqa_cli.serving.api.create_app` as its ingress; pictures are decoded
and prepared in the replica's worker threads as on one machine, and batched by
Ray Serve's ``@serve.batch`` instead of the scoring thread. Ray Serve's proxy
spreads requests over the replicas.
"""

from __future__ import annotations

import asyncio

from ray import serve

from dgiqa_cli.inference.scorer import PreparedImage, Scorer, ScoreResult
from dgiqa_cli.io.native_stderr import keep_native_stderr
from dgiqa_cli.serving.api import create_app
from dgiqa_cli.serving.batching import Batcher
from dgiqa_cli.serving.settings import ServeSettings


class RayBatcher(Batcher):
    """A :class:`Batcher` whose batches are made by ``@serve.batch`` (``batched``) instead of its own thread."""

    def __init__(self, scorer: Scorer, settings: ServeSettings, batched):
        super().__init__(scorer, settings)
        self.batched = batched

    def start(self) -> None:  # no scoring thread: Ray Serve makes the batches
        pass

    async def score_prepared(self, prepared: PreparedImage) -> ScoreResult:
        return await self.batched(prepared)


@serve.deployment(name="dgiqa")
@serve.ingress()
class DGIQADeployment:
    """One replica: a loaded Scorer behind the dgiqa app."""

    def __init__(self, scorer_options: dict, settings: ServeSettings):
        keep_native_stderr()  # a replica is a server too: its fd 2 is its log
        self.settings = settings
        self.scorer = Scorer(**scorer_options)
        self.batcher = RayBatcher(self.scorer, settings, self.score_batch)
        self.score_batch.set_max_batch_size(self.batcher.max_batch)
        self.score_batch.set_batch_wait_timeout_s(settings.max_wait_ms / 1000)

    def __serve_build_asgi_app__(self):
        return create_app(self.scorer, self.settings, self.batcher)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def score_batch(self, batch: list[PreparedImage]) -> list[ScoreResult]:
        """Pictures that arrived together, scored in one pass (in a thread: the replica's loop keeps serving)."""
        return await asyncio.get_running_loop().run_in_executor(None, self.batcher.score_now, batch)


def build_app(
    scorer_options: dict, settings: ServeSettings, replicas: int = 1, num_gpus_per_replica: float = 0
) -> serve.Application:
    """The Ray Serve application: ``replicas`` copies of the deployment, each on ``num_gpus_per_replica`` GPUs."""
    return DGIQADeployment.options(
        num_replicas=replicas,
        max_ongoing_requests=settings.max_queue,  # then queued by Ray Serve, which answers 503 beyond a full queue
        max_queued_requests=settings.max_queue,
        ray_actor_options={"num_gpus": num_gpus_per_replica},
        graceful_shutdown_timeout_s=settings.grace,
    ).bind(scorer_options, settings)
