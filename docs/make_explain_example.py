"""Rebuild docs/explain_example.png: `dgiqa explain --heatmap` on the test picture, with STAND-IN weights.

The real checkpoints are not in the repository, so the example runs on the
seeded stand-in weights the tests use (dgiqa_cli.models.seeded_weights): random networks,
whose maps show what the panel looks like, not what DGIQA sees in a picture.

    python docs/make_explain_example.py          # about a minute on a laptop CPU
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image
from typer.testing import CliRunner

from dgiqa_cli.cli import app  # the app `dgiqa` runs, `explain` included
from dgiqa_cli.models.seeded_weights import seeded_state

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
PICTURE = FIXTURES / "synthetic_480x640.png"
TARGET = ROOT / "docs" / "explain_example.png"


def standin_weights(folder: Path) -> tuple[Path, Path]:
    golden = json.loads((FIXTURES / "golden.json").read_text())["pipeline"]
    manifests = {
        "DGIQA_standin.pth": ("manifest_dgiqa.json", golden["dgiqa_weights_seed"]),
        "depth_anything_vits14_standin.pth": ("manifest_depth_anything_vits14.json", golden["depth_weights_seed"]),
    }
    for name, (manifest, seed) in manifests.items():
        tensors = json.loads((FIXTURES / manifest).read_text())["tensors"]
        torch.save(seeded_state(tensors, seed), folder / name)
    return folder / "DGIQA_standin.pth", folder / "depth_anything_vits14_standin.pth"


def main() -> int:
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        dgiqa, depth = standin_weights(folder)
        args = [
            "explain",
            str(PICTURE.relative_to(ROOT)),
            "--heatmap",
            "--out",
            str(folder / "out"),
            "--weights",
            str(dgiqa),
            "--depth-model",
            "vits",
            "--depth-weights",
            str(depth),
            "--device",
            "cpu",
            "--quality-scale",
            "picture",  # a random network's windows differ by hundredths: the picture's own range shows them
            "--note",
            "STAND-IN weights (random), not a real model",
        ]
        print("dgiqa " + shlex.join(args), file=sys.stderr, flush=True)
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        print(result.stdout, end="", flush=True)
        print(result.stderr, end="", file=sys.stderr)
        if result.exit_code != 0:
            return result.exit_code
        # a 256-colour copy (dithered) keeps the README light; the command itself writes full colour
        panel = Image.open(folder / "out" / f"{PICTURE.stem}_explain.png").convert("RGB")
        palette = panel.quantize(256, method=Image.Quantize.MEDIANCUT)
        panel.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(TARGET, optimize=True)
    print(f"wrote {TARGET.relative_to(ROOT)} ({TARGET.stat().st_size // 1024} KB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
