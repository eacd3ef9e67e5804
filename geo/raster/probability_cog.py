"""Write the probability raster (new, demolished) as a Cloud Optimized GeoTIFF, window by window.

Probabilities are scaled to uint8 (0..255 for 0..1). Pixels never written or written as invalid
are masked by an internal mask band (no nodata value: 0 is a real probability). The COG appears
at the target path only when :meth:`ProbabilityWriter.finish` succeeds (atomic rename); on
failure nothing is left there.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import RasterioError
from rasterio.windows import Window

from idou.errors import OutputConflict
from idou.geo.files.file_mode import give_usual_mode
from idou.geo.files.owned_outputs import marker_tags
from idou.geo.raster.grid import Grid

BAND_NAMES = ("new", "demolished")


def to_uint8(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] to the stored uint8 scale 0..255 (round half up, clipped; NaN → 0).

    The one uint8 probability scale of idou: computed in float64, so for probabilities made by
    ``idou.inference.blending.to_probabilities`` it equals ``sums_to_uint8`` of the same sums.
    """
    p = np.nan_to_num(np.asarray(probabilities, dtype=np.float64), nan=0.0)
    return np.clip(np.floor(p * 255.0 + 0.5), 0, 255).astype(np.uint8)


class ProbabilityWriter:
    """Write a 2-band uint8 probability raster on ``grid`` and finish it as a COG.

    Example:
        >>> with ProbabilityWriter("prob.tif", grid) as writer:
        ...     writer.write(window, probs, valid)   # probs (2, h, w) float in [0, 1]
        ...     writer.finish()

    Leaving the ``with`` block without :meth:`finish` (e.g. on an exception) discards the
    temporary files and leaves the target untouched.
    """

    def __init__(self, path: str | Path, grid: Grid, blocksize: int = 512,
                 compress: str = "deflate") -> None:
        self.path = Path(path)
        self.grid = grid
        self.blocksize = blocksize
        self.compress = compress
        folder = self.path.parent
        if not folder.is_dir():
            raise OutputConflict(f"the folder of {self.path} does not exist; create it or "
                                 "choose another output path.")
        if not os.access(folder, os.W_OK):
            raise OutputConflict(f"the folder of {self.path} is not writable; choose another "
                                 "output path.")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".part.tif", dir=folder)
        os.close(fd)
        self._tmp = Path(tmp)
        self._done = False
        profile = {
            "driver": "GTiff", "width": grid.width, "height": grid.height, "count": 2,
            "dtype": "uint8", "crs": grid.crs, "transform": grid.transform, "tiled": True,
            "blockxsize": blocksize, "blockysize": blocksize, "compress": "deflate",
            "predictor": 2, "BIGTIFF": "IF_SAFER", "interleave": "pixel", "sparse_ok": True,
        }
        try:
            with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
                self._ds = rasterio.open(self._tmp, "w", **profile)
        except RasterioError:
            self._tmp.unlink(missing_ok=True)
            raise
        for i, name in enumerate(BAND_NAMES, start=1):
            self._ds.set_band_description(i, name)
        self._ds.update_tags(idou_scale="probability = value / 255", **marker_tags())

    def __enter__(self) -> ProbabilityWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._done:
            self.abort()

    def write(self, window: Window, probabilities: np.ndarray,
              valid: np.ndarray | None = None) -> None:
        """Write a window of probabilities.

        Args:
            window: A window of the grid; parts outside the grid are dropped.
            probabilities: ``(2, h, w)``: float in [0, 1] (scaled) or uint8 (as is).
            valid: Optional ``(h, w)`` bool; False pixels are masked. Default: all valid.
        """
        data = probabilities if probabilities.dtype == np.uint8 else to_uint8(probabilities)
        h, w = int(window.height), int(window.width)
        if data.shape != (2, h, w):
            raise ValueError(f"expected probabilities of shape (2, {h}, {w}), got {data.shape}")
        inside = self.grid.clip(window)
        if inside is None:
            return
        r0 = int(inside.row_off - window.row_off)
        c0 = int(inside.col_off - window.col_off)
        rows = slice(r0, r0 + int(inside.height))
        cols = slice(c0, c0 + int(inside.width))
        self._ds.write(data[:, rows, cols], window=inside)
        mask = np.full((int(inside.height), int(inside.width)), 255, dtype=np.uint8)
        if valid is not None:
            mask[~valid[rows, cols]] = 0
        self._ds.write_mask(mask, window=inside)

    def finish(self) -> Path:
        """Build the COG (with overviews) and move it to the target path atomically."""
        self._ds.close()
        fd, out = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".cog.tif",
                                   dir=self.path.parent)
        os.close(fd)
        cog = Path(out)
        give_usual_mode(cog)
        try:
            rasterio.shutil.copy(
                self._tmp, cog, driver="COG", compress=self.compress.upper(),
                blocksize=self.blocksize, overview_resampling="average", predictor="YES",
                BIGTIFF="IF_SAFER", num_threads="ALL_CPUS")
            os.replace(cog, self.path)
        except BaseException:
            cog.unlink(missing_ok=True)
            self._tmp.unlink(missing_ok=True)
            self._done = True
            raise
        self._tmp.unlink(missing_ok=True)
        self._done = True
        return self.path

    def abort(self) -> None:
        """Discard everything written; the target path is not touched."""
        with contextlib.suppress(Exception):
            self._ds.close()
        self._tmp.unlink(missing_ok=True)
        self._done = True
