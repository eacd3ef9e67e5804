"""A disk-backed probability raster: uint8 ``(2, H, W)`` written and read by windows.

The engine writes each finished block here and the vectoriser reads it back in blocks, so a
whole flight's probabilities never sit in memory. Reads and writes go through ``pread`` /
``pwrite`` rather than a memory map, so pages touched once do not stay in the process's
resident set.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import numpy as np
from rasterio.windows import Window

CHANNELS = 2


class ProbabilityStore:
    """A raw, band-sequential uint8 file of ``CHANNELS x height x width`` probabilities."""

    def __init__(self, path: str | Path, height: int, width: int, *, create: bool = True) -> None:
        self.path = Path(path)
        self.height = int(height)
        self.width = int(width)
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        self._fd = os.open(self.path, flags, 0o600)
        if create:
            os.ftruncate(self._fd, CHANNELS * self.height * self.width)

    def close(self) -> None:
        """Close the file (it stays on disk)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ProbabilityStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _clip(self, window: Window) -> tuple[int, int, int, int]:
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        if r0 < 0 or c0 < 0 or r1 > self.height or c1 > self.width or r1 < r0 or c1 < c0:
            raise ValueError(f"window {window} is outside the {self.height}x{self.width} grid")
        return r0, r1, c0, c1

    def write(self, window: Window, probs: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Write uint8 ``(2, h, w)`` probabilities at ``window`` (inside the grid).

        ``valid`` is accepted for the sink interface and not stored: nodata is already 0.
        """
        r0, r1, c0, c1 = self._clip(window)
        data = np.ascontiguousarray(probs, dtype=np.uint8)
        if data.shape != (CHANNELS, r1 - r0, c1 - c0):
            raise ValueError(f"expected {(CHANNELS, r1 - r0, c1 - c0)}, got {data.shape}")
        for ch in range(CHANNELS):
            base = ch * self.height * self.width
            if c0 == 0 and c1 == self.width:
                os.pwrite(self._fd, data[ch].tobytes(), base + r0 * self.width)
                continue
            for k, row in enumerate(range(r0, r1)):
                os.pwrite(self._fd, data[ch, k].tobytes(), base + row * self.width + c0)

    def read(self, window: Window) -> np.ndarray:
        """uint8 ``(2, h, w)`` probabilities at ``window`` (inside the grid)."""
        r0, r1, c0, c1 = self._clip(window)
        out = np.empty((CHANNELS, r1 - r0, c1 - c0), dtype=np.uint8)
        for ch in range(CHANNELS):
            base = ch * self.height * self.width
            if c0 == 0 and c1 == self.width:
                buf = os.pread(self._fd, (r1 - r0) * self.width, base + r0 * self.width)
                out[ch] = np.frombuffer(buf, dtype=np.uint8).reshape(r1 - r0, self.width)
                continue
            for k, row in enumerate(range(r0, r1)):
                buf = os.pread(self._fd, c1 - c0, base + row * self.width + c0)
                out[ch, k] = np.frombuffer(buf, dtype=np.uint8)
        return out


class PresenceStore(ProbabilityStore):
    """The same store for a model's building presence (before, after): the engine writes the
    ``presence`` output's blended channels here (see ``engine._write_sinks``)."""

    takes_presence = True
