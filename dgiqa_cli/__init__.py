"""dgiqa: blind image quality assessment (DGIQA, Life-IQA) for the command line and Python.

from dgiqa_cli import Scorer
result = Scorer().score("photo.jpg")       # ScoreResult(path, score, error, ...)
results = Scorer().score_many(["a.jpg", "b.png"])
rgb = load_image("photo.jpg")              # the (H, W, 3) uint8 pixels the models see, or ImageError
"""

from .version import __version__

__all__ = ["ImageError", "Scorer", "ScoreResult", "list_models", "load_image", "__version__"]


def __getattr__(name):
    # Importing torch and timm takes seconds; `dgiqa --help` should not pay for it.
    if name in ("Scorer", "ScoreResult", "list_models"):
        from . import scorer

        return getattr(scorer, name)
    if name in ("load_image", "ImageError"):
        from . import images

        return getattr(images, name)
    raise AttributeError(f"module 'dgiqa_cli' has no attribute {name!r}")
