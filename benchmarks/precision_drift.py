"""How far the default (fast) precision's scores drift from the exact mode, beside the crops' own uncertainty.

    python benchmarks/precision_drift.py --depth-model vits --crops 20

Writes varied pictures (a 1024x768 photo-like JPEG, a small one, a 4000x3000 one, a grey JPEG, a 16-bit PNG, a
JPEG whose EXIF says "rotate", a 4:1 panorama, an RGBA PNG) and scores each twice with stand-in weights: in
the exact mode (``precision="fp32", backend="torch"``: the authors' arithmetic) and as ``dgiqa`` scores by
default (``--precision``, default auto: bf16 where the hardware computes it; backend auto). Prints, for each
picture, the exact score, the half-width of its crops' 95% interval (what ``dgiqa score`` prints beside every
score) and the drift; then the largest drift and its ratio to the median half-width.

Stand-in weights are random, so real checkpoints may drift differently: rerun with ``--weights FILE
--depth-weights FILE`` on the weights you use.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from dgiqa_cli.inference.scorer import Scorer

sys.path.insert(0, str(Path(__file__).parent))
from throughput import standin_weights  # noqa: E402


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth shapes plus grain, as uint8 BGR (OpenCV's order)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = max(height, width) / 1024
    base = np.stack(
        [np.sin(xx / ((40 + 7 * c + seed) * scale) + c) * np.cos(yy / ((55 + 5 * c) * scale)) for c in range(3)], -1
    )
    grain = rng.normal(0, 0.15, (max(1, height // 8), max(1, width // 8), 3)).astype(np.float32)
    return np.clip((base + cv2.resize(grain, (width, height))) * 80 + 128, 0, 255).astype(np.uint8)


def varied_pictures(folder: Path) -> dict[str, str]:
    """The pictures, by what makes each one different."""
    made = {}

    def jpeg(name, pixels, what):
        cv2.imwrite(str(folder / name), pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
        made[name] = what

    jpeg("photo.jpg", photo(768, 1024, 1), "1024x768 JPEG")
    jpeg("small.jpg", photo(240, 320, 2), "320x240 JPEG")
    jpeg("large.jpg", photo(3000, 4000, 3), "4000x3000 JPEG")
    jpeg("grey.jpg", cv2.cvtColor(photo(600, 800, 4), cv2.COLOR_BGR2GRAY), "grey 800x600 JPEG")
    jpeg("panorama.jpg", photo(700, 2800, 5), "4:1 panorama 2800x700")
    deep = photo(480, 640, 6).astype(np.uint16) * 257 + np.random.default_rng(6).integers(0, 257, (480, 640, 3))
    cv2.imwrite(str(folder / "deep.png"), deep.astype(np.uint16))
    made["deep.png"] = "16-bit PNG 640x480"
    rotated = Image.fromarray(photo(480, 640, 7)[:, :, ::-1])
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    rotated.save(folder / "exif.jpg", quality=90, exif=exif)
    made["exif.jpg"] = "JPEG with EXIF orientation 6"
    rgba = np.dstack([photo(480, 640, 8)[:, :, ::-1], np.full((480, 640), 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    made["rgba.png"] = "RGBA PNG 640x480"
    return {str(folder / name): what for name, what in made.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="auto", help="the precision compared with fp32 (default auto)")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino"])
    parser.add_argument("--depth-model", default="vits", choices=["vits", "vitb", "vitl"])
    parser.add_argument("--crops", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", default=None, help="DGIQA weights (default: stand-in weights)")
    parser.add_argument("--depth-weights", default=None, help="depth weights (default: stand-in weights)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dgiqa-drift-") as tmp:
        folder = Path(tmp)
        pictures = varied_pictures(folder)
        weights, depth_weights = standin_weights(folder, args.depth_model)
        common = dict(
            depth_model=args.depth_model,
            depth_weights=args.depth_weights or depth_weights,
            crops=args.crops,
            device=args.device,
        )
        exact = Scorer(args.weights or weights, precision="fp32", backend="torch", **common)
        fast = Scorer(args.weights or weights, precision=args.precision, backend=args.backend, **common)
        rows = []
        for path, what in pictures.items():
            reference, result = exact.score(path, strict=True), fast.score(path, strict=True)
            half_width = (reference.score_ci95_high - reference.score_ci95_low) / 2 if args.crops > 1 else None
            rows.append(
                {
                    "picture": what,
                    "size": f"{reference.width}x{reference.height}",
                    "exact": reference.score,
                    "ci95_half_width": half_width,
                    "drift": abs(result.score - reference.score),
                }
            )

    print(
        f"{fast.backend} {fast.precision} vs torch fp32 (exact), depth {args.depth_model}, {args.crops} crops, "
        f"device {fast.device}"
    )
    print("| picture | size | exact score | crops' 95% interval | drift |")
    print("|---|---|---|---|---|")
    for row in rows:
        interval = f"±{row['ci95_half_width']:.4f}" if row["ci95_half_width"] is not None else "-"
        print(f"| {row['picture']} | {row['size']} | {row['exact']:.4f} | {interval} | {row['drift']:.1e} |")
    drifts = np.array([row["drift"] for row in rows])
    summary = f"max drift {drifts.max():.1e}, mean {drifts.mean():.1e}"
    if args.crops > 1:
        median = float(np.median([row["ci95_half_width"] for row in rows]))
        summary += f"; median interval ±{median:.4f}: {median / drifts.max():.0f}x the largest drift"
    print(summary)
    if args.json:
        args.json.write_text(json.dumps({"backend": fast.backend, "precision": fast.precision, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
