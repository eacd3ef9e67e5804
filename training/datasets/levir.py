"""Change chips in the LEVIR-CD folder layout: ``A/`` (before), ``B/`` (after), ``label/``.

LEVIR-CD labels say *where* buildings changed, not *how*: a pixel is change (255, or any value
>= 128) or not (0). Almost all LEVIR-CD changes are new construction, so an untyped label is read
as: change → 1 in channel 0 (new); channel 1 (demolished) is 255 (ignore) everywhere, so the
demolished head is neither rewarded nor punished by data that cannot tell. With ``typed=True`` the
label is a class map instead: 0 no change, 1 new, 2 demolished, 255 ignore (both channels).

Files are matched by stem across the three folders (``A/x.png``, ``B/x.png``, ``label/x.png``;
png, jpg or tif). Large chips can be cut into ``chip_size`` windows, read with rasterio windows.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from idou.errors import UserInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
IGNORE = 255


@dataclass(frozen=True)
class _Chip:
    stem: str
    window: Window


def _index_folder(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def _open(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # plain PNG/JPEG chips
        return rasterio.open(path)


def _read_rgb(path: Path, window: Window) -> np.ndarray:
    """Read the first three bands of ``window`` as uint8 H×W×3 (grey is repeated)."""
    with _open(path) as src:
        bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
        data = src.read(bands, window=window, boundless=True, fill_value=0)
    if data.dtype != np.uint8:
        data = np.clip(data, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(data.transpose(1, 2, 0))


def _read_label(path: Path, window: Window) -> np.ndarray:
    with _open(path) as src:
        return np.asarray(src.read(1, window=window, boundless=True, fill_value=0))


def label_to_target(label: np.ndarray, typed: bool = False) -> np.ndarray:
    """Turn a LEVIR-CD label (H×W) into the 2×H×W change target (new, demolished).

    Args:
        label: untyped: 0 no change, >= 128 change (LEVIR-CD stores 255); typed: 0 none, 1 new,
            2 demolished, 255 ignore.
        typed: read ``label`` as a class map.

    Returns:
        uint8 2×H×W with 0/1 and 255 = ignore.
    """
    target = np.zeros((2, *label.shape), np.uint8)
    if typed:
        target[0][label == 1] = 1
        target[1][label == 2] = 1
        ignore = label == IGNORE
        target[:, ignore] = IGNORE
    else:
        target[0][label >= 128] = 1
        target[1] = IGNORE
    return target


class LevirCDDataset:
    """LEVIR-CD style chip folders as change items (see the module docstring for the labels).

    Args:
        root: folder holding ``A/``, ``B/`` and ``label/`` (e.g. ``LEVIR-CD/train``).
        chip_size: cut each image into windows of this size (the last row/column is shifted
            inward so no window runs off the image); None keeps whole images.
        typed: the labels are class maps (0 none, 1 new, 2 demolished, 255 ignore).
        stems: restrict to these file stems (e.g. a split list).

    Items: ``before``/``after`` uint8 H×W×3, ``target`` uint8 2×H×W. ``has_change[i]`` tells the
    sampler whether item i holds any change; it is read from the labels once, at construction.
    """

    def __init__(self, root: str | Path, chip_size: int | None = None, typed: bool = False,
                 stems: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        folders = {name: self.root / name for name in ("A", "B", "label")}
        missing = [name for name, folder in folders.items() if not folder.is_dir()]
        if missing:
            raise UserInputError(
                f"{self.root} is not a LEVIR-CD folder (missing {', '.join(missing)}/); "
                "pass the folder that holds A/, B/ and label/.")
        self.typed = typed
        self.chip_size = chip_size
        files = {name: _index_folder(folder) for name, folder in folders.items()}
        common = sorted(set(files["A"]) & set(files["B"]) & set(files["label"]))
        if stems is not None:
            wanted = set(stems)
            common = [s for s in common if s in wanted]
        if not common:
            raise UserInputError(
                f"{self.root} has no file present in all of A/, B/ and label/; "
                "name each chip the same in the three folders.")
        self._a, self._b, self._label = files["A"], files["B"], files["label"]
        self._chips: list[_Chip] = []
        self.has_change: list[bool] = []
        for stem in common:  # each label file is read once, whatever the number of chips
            with _open(self._label[stem]) as src:
                changed = self._changed(np.asarray(src.read(1)))
            for chip in self._windows(stem, changed.shape):
                r, c = int(chip.window.row_off), int(chip.window.col_off)
                h, w = int(chip.window.height), int(chip.window.width)
                self._chips.append(chip)
                self.has_change.append(bool(changed[r:r + h, c:c + w].any()))

    def _windows(self, stem: str, shape: tuple[int, ...]) -> list[_Chip]:
        height, width = shape
        size = self.chip_size
        if size is None or (size >= height and size >= width):
            return [_Chip(stem, Window(0, 0, width, height))]
        rows = _starts(height, size)
        cols = _starts(width, size)
        h, w = min(size, height), min(size, width)
        return [_Chip(stem, Window(c, r, w, h)) for r in rows for c in cols]

    def _changed(self, label: np.ndarray) -> np.ndarray:
        if self.typed:
            return np.isin(label, (1, 2))
        return label >= 128

    def __len__(self) -> int:
        return len(self._chips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        chip = self._chips[index]
        before = _read_rgb(self._a[chip.stem], chip.window)
        after = _read_rgb(self._b[chip.stem], chip.window)
        target = label_to_target(_read_label(self._label[chip.stem], chip.window), self.typed)
        return {"before": before, "after": after, "target": target}

    def describe(self, index: int) -> str:
        """A human-readable name of item ``index`` (file stem and window offset)."""
        chip = self._chips[index]
        return f"{chip.stem}@{int(chip.window.row_off)},{int(chip.window.col_off)}"


def _starts(length: int, size: int) -> list[int]:
    """Window starts covering ``length`` with windows of ``size`` (last one shifted inward)."""
    if size >= length:
        return [0]
    starts = list(range(0, length - size + 1, size))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts
