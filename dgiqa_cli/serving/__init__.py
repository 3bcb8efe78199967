"""``dgiqa serve``: one loaded model behind HTTP, with dynamic batching, limits and API keys.

:func:`create_app` builds the FastAPI app (:mod:`.api`: not ``app``, the name
``serve run`` wants for the Ray Serve application); :mod:`.batching` batches
requests; :mod:`.limits` checks keys and addresses; :mod:`.server` runs uvicorn
and stops it gracefully; :mod:`.ray_serve` deploys the same app on Ray Serve.
``serve run dgiqa_cli.serving:app`` builds that application from the
environment (``DGIQA_WEIGHTS``, ``DGIQA_CROPS``, ..., ``DGIQA_SERVE_MAX_BATCH``,
..., ``DGIQA_API_KEY``: see :mod:`.settings`).
"""

from __future__ import annotations

from dgiqa_cli.serving.api import create_app
from dgiqa_cli.serving.settings import ServeSettings, scorer_options_from_env

__all__ = ["ServeSettings", "app", "create_app", "scorer_options_from_env"]


def __getattr__(name: str):
    if name == "app":  # built when asked for, so that importing this package needs no Ray
        from dgiqa_cli.serving.ray_serve import build_app

        return build_app(scorer_options_from_env(), ServeSettings.from_env())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
