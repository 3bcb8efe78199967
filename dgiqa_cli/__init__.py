"""dgiqa: blind image quality assessment (DGIQA, Life-IQA) for the command line and Python.

    from dgiqa_cli import Scorer, create_model
    result = Scorer().score("photo.jpg")        # ScoreResult(path, score, error, ...); never raises for a bad file
    results = Scorer().score_many(["a.jpg", "b.png"])
    model = create_model("dgiqa-koniq")         # the pipeline: model(x) on an (N, 3, H, W) batch in [0, 1]
    rgb = load_image("photo.jpg")               # the (H, W, 3) uint8 pixels the models see, or ImageError

Everything dgiqa raises on purpose derives from :class:`DGIQAError`.
"""

from dgiqa_cli.errors import DGIQAError
from dgiqa_cli.version import __version__

__all__ = [
    "DGIQAError",
    "ImageError",
    "ScoreResult",
    "Scorer",
    "WeightsError",
    "__version__",
    "create_model",
    "list_models",
    "list_weights",
    "load_image",
]

# Where each public name lives; imported on first use, because torch and timm take seconds to import and
# `dgiqa --help` should not pay for them.
_LAZY = {
    "Scorer": "dgiqa_cli.inference.scorer",
    "ScoreResult": "dgiqa_cli.inference.scorer",
    "list_weights": "dgiqa_cli.inference.scorer",
    "list_models": "dgiqa_cli.inference.scorer",
    "create_model": "dgiqa_cli.inference.model",
    "load_image": "dgiqa_cli.io.images",
    "ImageError": "dgiqa_cli.io.images",
    "WeightsError": "dgiqa_cli.errors",
}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dgiqa_cli' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
