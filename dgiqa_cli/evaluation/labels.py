"""Human ratings: the standard IQA data sets in the layouts they are distributed in, or any labels file.

Native layouts (a data set's folder, recognised by the file that holds its ratings):

``koniq10k``
    ``koniq10k_scores_and_distributions.csv`` (``image_name``, ``MOS`` on 1-5; ``MOS_zscore`` on 0-100 is the
    column Life-IQA trains on), pictures in ``1024x768/`` (else ``512x384/``). The official
    training/validation/test split is ``koniq10k_distributions_sets.csv`` from the KonIQ repository
    (github.com/subpic/koniq, ``metadata/``), column ``set``; put it beside the scores file.
``kadid10k``
    ``dmos.csv`` (``dist_img``, ``ref_img``, ``dmos``), pictures in ``images/`` (or ``distorted_images/``).
    Despite its name the column grows with quality (1-5). No official split: every picture, grouped by
    its reference image, so resampling and splits keep the 81 scenes apart.
``livec``
    LIVE In the Wild Challenge: ``Data/AllImages_release.mat`` and ``Data/AllMOS_release.mat``, pictures in
    ``Images/``. The first 7 entries are the training pictures shown to raters, left out as usual (1162 remain).
``spaq``
    ``Annotations/MOS and Image attribute scores.xlsx`` (``Image name``, ``MOS``), pictures in ``TestImage/``
    (smartphone photos up to 4000x3000; :data:`SPAQ_SHORT_SIDE` says how they are usually resized).

Any other set: a CSV or Parquet file with ``path`` and ``mos`` columns (names overridable), paths relative
to the file (or ``root``), optional ``split`` and ``group`` columns.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

from dgiqa_cli.errors import UsageError
from dgiqa_cli.io.names import printable

#: The usual SPAQ protocol scores its photos resized to 512 pixels on the short side (the SPAQ paper's).
SPAQ_SHORT_SIDE = 512

_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
}


class LabelsError(UsageError):
    """A labels file or data-set folder cannot be read as ratings; ``str()`` says which and why in one line."""


@dataclass(frozen=True)
class LabelledImage:
    """One rated picture: where it is, its mean opinion score, and the split and group it belongs to."""

    path: str  # the picture's path (resolved against the labels file's folder or the root)
    mos: float
    split: str | None = None  # train, validation, test, or None
    group: str | None = None  # e.g. the reference picture of a synthetic data set
    name: str = ""  # the picture as the labels name it (relative to the root): the key predictions join on


@dataclass
class LabelledSet:
    """A data set's ratings, in the order its labels list them."""

    name: str  # koniq10k, kadid10k, livec, spaq, or the labels file's stem
    images: list[LabelledImage]
    lower_is_better: bool = False  # DMOS-style labels
    source: str = ""  # the file the ratings were read from
    root: str = ""  # the folder picture names are relative to
    split: str = "all"  # the part these images are
    notes: tuple[str, ...] = ()  # protocol facts worth printing (left-out pictures, where the split came from)
    short_side: int | None = None  # score the pictures resized to this short side (SPAQ's usual protocol)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def splits(self) -> list[str]:
        return sorted({image.split for image in self.images if image.split})

    def select(self, split: str | None) -> LabelledSet:
        """The images of one split (``None``, ``all``: every image); an unknown split is an error naming those there."""
        if split in (None, "all"):
            return replace(self, split="all")
        wanted = _SPLIT_NAMES.get(split.lower(), split)
        chosen = [image for image in self.images if image.split == wanted]
        if not chosen:
            have = ", ".join(self.splits) or "none (the labels have no split column)"
            raise LabelsError(f"{self.name}: no images in split {split!r}; splits there: {have}; or use --split all")
        return replace(self, images=chosen, split=wanted)

    def default_split(self) -> str:
        """The official test split where the labels have one, else every image."""
        return "test" if "test" in self.splits else "all"

    @property
    def mos_range(self) -> tuple[float, float]:
        values = [image.mos for image in self.images]
        return (min(values), max(values)) if values else (math.nan, math.nan)


# -- native layouts --------------------------------------------------------------------------------------------------

KONIQ_SCORES = "koniq10k_scores_and_distributions.csv"
KONIQ_SETS = "koniq10k_distributions_sets.csv"
KADID_LABELS = "dmos.csv"
LIVEC_NAMES = os.path.join("Data", "AllImages_release.mat")
LIVEC_MOS = os.path.join("Data", "AllMOS_release.mat")
SPAQ_LABELS = os.path.join("Annotations", "MOS and Image attribute scores.xlsx")
LIVEC_TRAINING_PICTURES = 7

#: Data-set name -> the file (relative to its folder) that marks the layout.
NATIVE = {"koniq10k": KONIQ_SCORES, "kadid10k": KADID_LABELS, "livec": LIVEC_MOS, "spaq": SPAQ_LABELS}


def detect_dataset(folder: str | os.PathLike) -> str | None:
    """Which native layout a folder holds, or None (:func:`load_dataset` also looks one level down)."""
    folder = Path(folder)
    for name, marker in NATIVE.items():
        if (folder / marker).is_file():
            return name
    return None


def _data_root(folder: Path, marker: str) -> Path:
    """The folder holding ``marker``: ``folder`` itself or its only sub-folder that does."""
    if (folder / marker).is_file():
        return folder
    below = [sub for sub in sorted(folder.iterdir()) if sub.is_dir() and (sub / marker).is_file()]
    if len(below) == 1:
        return below[0]
    raise LabelsError(f"{printable(str(folder))}: no {marker} here")


def _pictures_folder(root: Path, candidates: tuple[str, ...]) -> Path:
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    return root


def load_koniq(folder: Path, mos_column: str = "MOS") -> LabelledSet:
    root = _data_root(folder, KONIQ_SCORES)
    rows = _read_csv(root / KONIQ_SCORES)
    _need_columns(root / KONIQ_SCORES, rows, ("image_name", mos_column))
    pictures = _pictures_folder(root, ("1024x768", "512x384"))
    sets = {}
    notes = [f"pictures from {pictures.name}/", f"MOS column {mos_column}"]
    if (root / KONIQ_SETS).is_file():
        set_rows = _read_csv(root / KONIQ_SETS)
        _need_columns(root / KONIQ_SETS, set_rows, ("image_name", "set"))
        sets = {row["image_name"]: _split_name(row["set"]) for row in set_rows}
        notes.append(f"official split from {KONIQ_SETS}")
    else:
        notes.append(f"no official split ({KONIQ_SETS} is not beside the scores)")
    images = [
        LabelledImage(
            path=str(pictures / row["image_name"]),
            mos=_number(row[mos_column], root / KONIQ_SCORES, i + 2, mos_column),
            split=sets.get(row["image_name"]),
            name=row["image_name"],
        )
        for i, row in enumerate(rows)
    ]
    return LabelledSet("koniq10k", images, source=str(root / KONIQ_SCORES), root=str(pictures), notes=tuple(notes))


def load_kadid(folder: Path, mos_column: str = "dmos") -> LabelledSet:
    root = _data_root(folder, KADID_LABELS)
    rows = _read_csv(root / KADID_LABELS)
    _need_columns(root / KADID_LABELS, rows, ("dist_img", "ref_img", mos_column))
    pictures = _pictures_folder(root, ("images", "distorted_images"))
    images = [
        LabelledImage(
            path=str(pictures / row["dist_img"]),
            mos=_number(row[mos_column], root / KADID_LABELS, i + 2, mos_column),
            group=row["ref_img"],
            name=row["dist_img"],
        )
        for i, row in enumerate(rows)
    ]
    notes = ("no official split: all pictures, grouped by reference image", "dmos grows with quality (1-5)")
    return LabelledSet("kadid10k", images, source=str(root / KADID_LABELS), root=str(pictures), notes=notes)


def load_livec(folder: Path) -> LabelledSet:
    from scipy.io import loadmat

    root = _data_root(folder, LIVEC_MOS)
    try:
        names = loadmat(root / LIVEC_NAMES)["AllImages_release"]
        mos = loadmat(root / LIVEC_MOS)["AllMOS_release"]
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise LabelsError(f"{printable(str(root))}: cannot read the LIVE Challenge .mat files ({exc})") from None
    names = [_mat_text(entry) for entry in names.reshape(-1)]
    mos = [float(value) for value in mos.reshape(-1)]
    if len(names) != len(mos):
        raise LabelsError(f"{printable(str(root))}: {len(names)} names but {len(mos)} MOS values in Data/*.mat")
    pictures = _pictures_folder(root, ("Images",))
    skip = LIVEC_TRAINING_PICTURES
    images = [
        LabelledImage(path=str(pictures / name), mos=value, name=name)
        for name, value in zip(names[skip:], mos[skip:], strict=True)
    ]
    notes = (f"the first {skip} pictures (shown to raters for training) left out",)
    return LabelledSet("livec", images, source=str(root / LIVEC_MOS), root=str(pictures), notes=notes)


def _mat_text(entry) -> str:
    """A MATLAB cell entry (a 1x1 array of a string) as a str."""
    while hasattr(entry, "shape") and getattr(entry, "size", 0) == 1 and entry.dtype == object:
        entry = entry.reshape(-1)[0]
    if hasattr(entry, "reshape") and entry.dtype.kind in "US":
        entry = "".join(entry.reshape(-1).tolist())
    return str(entry).strip()


def load_spaq(folder: Path, mos_column: str = "MOS", resize: bool = True) -> LabelledSet:
    root = _data_root(folder, SPAQ_LABELS)
    rows = _read_xlsx(root / SPAQ_LABELS)
    _need_columns(root / SPAQ_LABELS, rows, ("Image name", mos_column))
    pictures = _pictures_folder(root, ("TestImage",))
    images = [
        LabelledImage(
            path=str(pictures / str(row["Image name"])),
            mos=_number(row[mos_column], root / SPAQ_LABELS, i + 2, mos_column),
            name=str(row["Image name"]),
        )
        for i, row in enumerate(rows)
        if row.get("Image name") not in (None, "")
    ]
    note = f"resized to {SPAQ_SHORT_SIDE} px on the short side" if resize else "scored at full size (--no-spaq-resize)"
    return LabelledSet(
        "spaq",
        images,
        source=str(root / SPAQ_LABELS),
        root=str(pictures),
        notes=("no official split: all pictures", note),
        short_side=SPAQ_SHORT_SIDE if resize else None,
    )


def load_dataset(
    folder: str | os.PathLike, name: str | None = None, mos_column: str | None = None, spaq_resize: bool = True
) -> LabelledSet:
    """A data set in its native layout (the folder, or its one sub-folder that holds one, as archives unpack);
    ``name`` forces the layout instead of detecting it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelsError(f"{printable(str(folder))}: not a folder")
    name = name or detect_dataset(folder) or _detect_below(folder)
    if name is None:
        known = ", ".join(f"{n} ({m})" for n, m in NATIVE.items())
        raise LabelsError(f"{printable(str(folder))}: not a known data-set layout; looked for {known}; or use --labels")
    column = {"mos_column": mos_column} if mos_column else {}
    if name == "koniq10k":
        return load_koniq(folder, **column)
    if name == "kadid10k":
        return load_kadid(folder, **column)
    if name == "livec":
        return load_livec(folder)
    if name == "spaq":
        return load_spaq(folder, **column, resize=spaq_resize)
    raise LabelsError(f"unknown data set {name!r}; choose one of {', '.join(NATIVE)}")


def _detect_below(folder: Path) -> str | None:
    found = {detect_dataset(sub) for sub in sorted(folder.iterdir()) if sub.is_dir()} - {None}
    return found.pop() if len(found) == 1 else None


# -- any labels file -------------------------------------------------------------------------------------------------


def load_labels(
    labels: str | os.PathLike | None = None,
    *,
    dataset: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    path_column: str = "path",
    mos_column: str | None = None,
    split_column: str = "split",
    group_column: str = "group",
    lower_is_better: bool = False,
    spaq_resize: bool = True,
) -> LabelledSet:
    """Ratings from a labels file (CSV or Parquet) or, with ``dataset``, a data-set folder in its native layout."""
    if dataset is not None:
        found = load_dataset(dataset, mos_column=mos_column, spaq_resize=spaq_resize)
        return replace(found, lower_is_better=lower_is_better) if lower_is_better else found
    if labels is None:
        raise LabelsError("give a data-set folder or a labels file")
    labels = Path(labels)
    if not labels.is_file():
        raise LabelsError(f"{printable(str(labels))}: no such file")
    rows = _read_parquet(labels) if labels.suffix.lower() in (".parquet", ".pq") else _read_csv(labels)
    mos_column = mos_column or "mos"
    columns = _need_columns(labels, rows, (path_column, mos_column))
    split_key = _column(columns, split_column)
    group_key = _column(columns, group_column)
    base = Path(root) if root is not None else labels.parent
    images = []
    for i, row in enumerate(rows):
        name = str(row[columns[path_column]] or "")
        if not name:
            raise LabelsError(f"{printable(str(labels))}, row {i + 2}: empty {path_column}")
        split = row.get(split_key) if split_key else None
        group = row.get(group_key) if group_key else None
        images.append(
            LabelledImage(
                path=os.path.normpath(base / name),
                mos=_number(row[columns[mos_column]], labels, i + 2, mos_column),
                split=_split_name(split) if split not in (None, "") else None,
                group=str(group) if group not in (None, "") else None,
                name=name,
            )
        )
    return LabelledSet(labels.stem, images, lower_is_better, source=str(labels), root=str(base))


def _read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelsError(f"{printable(str(path))}: cannot read as CSV ({exc})") from None


def _read_parquet(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    except ImportError:
        raise LabelsError("reading Parquet labels needs pyarrow: pip install pyarrow") from None
    except Exception as exc:  # pyarrow raises its own error types for damaged files
        raise LabelsError(f"{printable(str(path))}: cannot read as Parquet ({exc})") from None


def _read_xlsx(path: Path) -> list[dict]:
    try:
        from openpyxl import load_workbook

        sheet = load_workbook(path, read_only=True, data_only=True).worksheets[0]
        values = list(sheet.iter_rows(values_only=True))
    except ImportError:
        raise LabelsError("reading SPAQ's spreadsheet needs openpyxl: pip install openpyxl") from None
    except Exception as exc:  # openpyxl raises zipfile and XML errors for damaged files
        raise LabelsError(f"{printable(str(path))}: cannot read the spreadsheet ({exc})") from None
    if not values:
        return []
    header = [str(cell).strip() if cell is not None else "" for cell in values[0]]
    return [dict(zip(header, row, strict=False)) for row in values[1:] if any(cell is not None for cell in row)]


def _column(columns: dict[str, str], wanted: str) -> str | None:
    """An optional column's name in the file: exact, else the same name in other case; None when absent."""
    if wanted in columns:
        return columns[wanted]
    return next((name for name in columns if str(name).lower() == wanted.lower()), None)


def _need_columns(path: Path, rows: list[dict], wanted: tuple[str, ...]) -> dict[str, str]:
    """Map each wanted column to the file's own (exact name, else the same name in other case); name what lacks."""
    header = list(rows[0]) if rows else []
    if not rows:
        raise LabelsError(f"{printable(str(path))}: no rows")
    by_lower = {str(name).lower(): name for name in header}
    columns = {name: name for name in header}
    for name in wanted:
        if name not in columns and name.lower() in by_lower:
            columns[name] = by_lower[name.lower()]
    missing = [name for name in wanted if name not in columns]
    if missing:
        raise LabelsError(
            f"{printable(str(path))}: no {' or '.join(missing)} column; it has {', '.join(map(str, header))} "
            "(--path-column and --mos-column choose others)"
        )
    return columns


def _number(value, path: Path, row: int, column: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise LabelsError(f"{printable(str(path))}, row {row}: {column} {value!r} is not a number")
    return number


def _split_name(value) -> str:
    text = str(value).strip()
    return _SPLIT_NAMES.get(text.lower(), text)
