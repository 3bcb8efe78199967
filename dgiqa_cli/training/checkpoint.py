"""The checkpoint written after every epoch: model, optimiser, scheduler, RNG states, epoch, history.

Written to a temporary file beside it and renamed over the old one, so that a kill or Ctrl-C at any moment
leaves the previous epoch's checkpoint or the new one, never half of one (not synced to the disk: a power
cut may lose the last epoch's). It holds tensors, numbers and strings only,
and is read back with ``torch.load(weights_only=True)``: no code runs when it is read.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from dgiqa_cli.errors import UsageError
from dgiqa_cli.io import interrupts
from dgiqa_cli.io.atomic import atomic_write

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "dgiqa-finetune-checkpoint-1"


class CheckpointError(UsageError):
    """A checkpoint that is missing, unreadable, or from another run."""


def rng_states() -> dict:
    """Every random generator the training draws from: Python's, NumPy's and torch's (CPU and CUDA)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": repr(random.getstate()),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "gauss": [has_gauss, cached]},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    import ast

    random.setstate(_as_tuple(ast.literal_eval(states["python"])))
    numpy_state = states["numpy"]
    has_gauss, cached = numpy_state["gauss"]
    keys = numpy_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy_state["pos"], has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def save_checkpoint(folder: Path, state: dict) -> Path:
    """Write ``state`` (plus the RNG states) atomically to ``folder/checkpoint.pt``."""
    path = folder / CHECKPOINT_FILE
    payload = {"format": FORMAT, **state, "rng": rng_states()}
    with atomic_write(path) as f:
        torch.save(payload, f)
    interrupts.reached("checkpoint")
    return path


def load_checkpoint(folder: Path) -> dict:
    """The checkpoint in ``folder``; restoring the RNG states is the caller's last step."""
    path = folder / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from (run without --resume to start)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say so in one line
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a dgiqa finetune checkpoint")
    return state
