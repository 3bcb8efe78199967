"""Honest model selection starts with the split: training, validation and test pictures, fixed once.

The labels' own ``split`` column wins. Without a validation split, one is drawn from the training pictures
(by ``group`` when the labels have one, so that the distorted versions of one reference picture never sit
on both sides), seeded, and written to ``split.csv`` beside the weights with its sha256; a resumed run reads
that file back and refuses one that changed. The test split is never looked at before the end.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dgiqa_cli.errors import UsageError

SPLIT_FILE = "split.csv"
SPLITS = ("train", "validation", "test")


class SplitError(UsageError):
    """The labels cannot be split as asked, or a saved split does not match the labels."""


@dataclass
class Split:
    """Which picture is in which part. ``assignment``: picture path -> train / validation / test."""

    assignment: dict[str, str]
    origin: str  # how the validation split was made, in words

    def paths(self, part: str) -> list[str]:
        return [path for path, where in self.assignment.items() if where == part]

    def text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "split"])
        writer.writerows(self.assignment.items())
        return buffer.getvalue()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text().encode("utf-8")).hexdigest()

    def counts(self) -> dict[str, int]:
        return {part: len(self.paths(part)) for part in SPLITS}

    def save(self, folder: Path) -> Path:
        path = folder / SPLIT_FILE
        tmp = path.with_name(f".{SPLIT_FILE}.tmp")
        tmp.write_text(self.text(), encoding="utf-8")
        tmp.replace(path)
        return path


def make_split(images, val_fraction: float, seed: int) -> Split:
    """The split for ``images`` (:class:`LabelledImage` s, in the labels' order)."""
    given = {image.split for image in images}
    train_pool = [image for image in images if image.split in (None, "train")]
    # Pictures of other splits (say "unused") take no part; pictures with no split are training pictures.
    assignment = {image.path: image.split if image.split in SPLITS else image.split or "train" for image in images}
    if "validation" in given:
        return Split(assignment, "the labels' validation split")
    if not 0 < val_fraction < 1:
        raise SplitError("the labels have no validation split: give --val-fraction between 0 and 1")
    units: dict[str, list[str]] = {}
    by_group = any(image.group for image in train_pool)
    for image in train_pool:
        units.setdefault(image.group or image.path if by_group else image.path, []).append(image.path)
    if len(units) < 2:
        raise SplitError(f"{len(units)} training group(s): too few to hold some out for validation")
    keys = list(units)
    order = np.random.default_rng(seed).permutation(len(keys))
    held = max(1, min(len(keys) - 1, math.ceil(val_fraction * len(keys))))
    for i in order[:held]:
        for path in units[keys[i]]:
            assignment[path] = "validation"
    unit = "groups" if by_group else "pictures"
    origin = f"{held} of {len(keys)} training {unit} held out at random (fraction {val_fraction:g}, seed {seed})"
    return Split(assignment, origin)


def load_split(folder: Path, expected_sha256: str) -> Split:
    """The split saved by a run being resumed; an edited or lost file is an error, not a new split."""
    path = folder / SPLIT_FILE
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    except OSError as exc:
        raise SplitError(f"{path}: cannot read the saved split ({exc.strerror or exc})") from None
    split = Split({row["path"]: row["split"] for row in rows}, "saved")
    if split.sha256 != expected_sha256:
        raise SplitError(f"{path}: the split changed since the run began (sha256 {split.sha256[:12]}…)")
    return split
