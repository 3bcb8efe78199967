"""Tiny rated data sets, written by the tests in each layout the real ones are distributed in.

Pictures are one fixture picture degraded at graded levels (Gaussian blur plus noise), so their quality
is known by construction: level 0 is the best, each further level worse. Ratings follow the levels.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

FIXTURE = Path(__file__).parent / "fixtures" / "synthetic_480x640.png"


def degraded(level: int, size: tuple[int, int] = (240, 320), seed: int = 0) -> np.ndarray:
    """The fixture picture (BGR) at ``size`` (H, W), blurred and noised ``level`` steps (0: untouched)."""
    picture = cv2.resize(cv2.imread(str(FIXTURE)), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    if level == 0:
        return picture
    blurred = cv2.GaussianBlur(picture, (0, 0), sigmaX=0.8 * level)
    noise = np.random.default_rng(seed + level).normal(0, 4.0 * level, blurred.shape)
    return np.clip(blurred + noise, 0, 255).astype(np.uint8)


def write_pictures(folder: Path, names: list[str], levels: list[int], size=(240, 320)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, level in zip(names, levels, strict=True):
        path = folder / name
        cv2.imwrite(str(path), degraded(level, size, seed=len(paths)))
        paths.append(path)
    return paths


def mos_of(level: int) -> float:
    """The rating of a level, on KonIQ's 1-5 scale: worse with every level."""
    return round(4.6 - 0.45 * level, 3)


def koniq(root: Path, levels=(0, 1, 2, 3, 4, 5), sets=None, with_sets: bool = True) -> Path:
    """``koniq10k_scores_and_distributions.csv`` + ``1024x768/`` (+ the official ``..._sets.csv``)."""
    names = [f"{1000 + i}.jpg" for i in range(len(levels))]
    write_pictures(root / "1024x768", names, list(levels))
    pattern = ["training", "test", "training", "validation", "test", "test"]
    sets = sets or [pattern[i % len(pattern)] for i in range(len(levels))]
    with open(root / "koniq10k_scores_and_distributions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"])
        for name, level in zip(names, levels, strict=True):
            w.writerow([name, 1, 2, 3, 4, 5, 15, mos_of(level), 0.5, 25 * (mos_of(level) - 1)])
    if with_sets:
        with open(root / "koniq10k_distributions_sets.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"])
            for name, level, split in zip(names, levels, sets, strict=True):
                w.writerow([name, 1, 2, 3, 4, 5, 15, mos_of(level), 0.5, split])
    return root


def kadid(root: Path, references: int = 2, levels=(0, 2, 4)) -> Path:
    """``dmos.csv`` + ``images/``: each reference picture at every level, grouped by reference."""
    rows = []
    for ref in range(1, references + 1):
        for step, level in enumerate(levels, start=1):
            name = f"I{ref:02d}_01_{step:02d}.png"
            write_pictures(root / "images", [name], [level])
            rows.append([name, f"I{ref:02d}.png", mos_of(level), 0.1])
    with open(root / "dmos.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dist_img", "ref_img", "dmos", "var"])
        w.writerows(rows)
    return root


def livec(root: Path, levels=(0, 1, 2, 3)) -> Path:
    """``Data/AllImages_release.mat`` + ``Data/AllMOS_release.mat`` + ``Images/``; the first 7 are training ones."""
    from scipy.io import savemat

    training = [f"trainingImages/t{i}.bmp" for i in range(1, 8)]
    names = [f"{10 + i}.bmp" for i in range(len(levels))]
    write_pictures(root / "Images", names, list(levels))
    all_names = np.empty((len(training) + len(names), 1), dtype=object)
    for i, name in enumerate(training + names):
        all_names[i, 0] = name
    mos = np.array([[50.0] * len(training) + [20 * mos_of(level) for level in levels]])
    (root / "Data").mkdir(parents=True, exist_ok=True)
    savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": all_names})
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos})
    return root


def spaq(root: Path, levels=(0, 1, 2), size=(900, 1200)) -> Path:
    """``Annotations/MOS and Image attribute scores.xlsx`` + ``TestImage/`` (bigger photos, shrunk when scored)."""
    from openpyxl import Workbook

    names = [f"{i:05d}.jpg" for i in range(1, len(levels) + 1)]
    write_pictures(root / "TestImage", names, list(levels), size=size)
    book = Workbook()
    sheet = book.active
    sheet.append(["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"])
    for name, level in zip(names, levels, strict=True):
        sheet.append([name, 20 * mos_of(level), 50, 50, 50, 50, 50])
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    book.save(root / "Annotations" / "MOS and Image attribute scores.xlsx")
    return root


def labels_csv(path: Path, levels=(0, 1, 2, 3, 4, 5), extra_columns: dict | None = None) -> Path:
    """A plain labels file: ``path,mos`` (+ extra columns) with pictures in ``pics/`` beside it."""
    names = [f"pics/p{i}.png" for i in range(len(levels))]
    write_pictures(path.parent / "pics", [Path(n).name for n in names], list(levels))
    extra_columns = extra_columns or {}
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "mos", *extra_columns])
        for i, (name, level) in enumerate(zip(names, levels, strict=True)):
            w.writerow([name, mos_of(level), *(values[i] for values in extra_columns.values())])
    return path
