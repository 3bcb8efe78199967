"""The defaults of the scoring settings, in one place that imports nothing (so ``dgiqa --help`` stays fast).

The library (:class:`~dgiqa_cli.inference.scorer.Scorer`) and the command line
(:class:`~dgiqa_cli.cli.options.ScorerOptions`) both take their defaults from here, so the two cannot drift apart.
"""

from __future__ import annotations

DEFAULT_CROPS = 20  # 224x224 crops averaged per picture, as the paper scores
DEFAULT_CROP_MODE = "official"  # the authors' seeded random crop positions
DEFAULT_SEED = 42  # the authors' seed of those positions
DEFAULT_DEVICE = "auto"  # CUDA, then MPS, then the CPU
DEFAULT_PRECISION = None  # $DGIQA_PRECISION, else auto: bf16 where the hardware computes it (GPUs, recent CPUs)
MAX_PIXELS = 200_000_000  # pictures above this are refused before decoding (protects memory)
