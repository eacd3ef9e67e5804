"""A batch run's block files and their mosaic: one GeoTIFF per block, one VRT over them all.

Each block's probabilities (uint8, channel 0 = new, 1 = demolished; bands 3-4 building presence
before and after when the model declares it) go to ``OUT/blocks/<id>.tif`` atomically
(temporary file, then ``os.replace``), its valid pixels as the file's internal mask. At the end
``OUT/probabilities.vrt`` (and ``OUT/presence.vrt``) mosaic them, read back by
:class:`MosaicReader`, and the masks make the ``coverage`` layer.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio

from idou.inference.blocks import Block
from idou.inference.contract import OUTPUT_PRESENCE

BLOCKS_DIR = "blocks"
MOSAIC_NAME = "probabilities.vrt"
PRESENCE_NAME = "presence.vrt"
PROBABILITY_BANDS = ((1, "new"), (2, "demolished"))
PRESENCE_BANDS = ((3, "presence_before"), (4, "presence_after"))


def block_path(blocks_dir: Path, block: Block) -> Path:
    """Where a block's probabilities live."""
    return blocks_dir / f"{block.id}.tif"


def keeps_presence(contract: Any) -> bool:
    """The model declares building presence, so block files hold it as bands 3-4."""
    return OUTPUT_PRESENCE in contract.extra_outputs


def block_complete(path: Path, channels: int) -> bool:
    """The block file exists and holds every band this model makes (a block written without
    presence, e.g. by an older idou, is computed again)."""
    if not path.is_file():
        return False
    if channels == 2:
        return True
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as ds:
            return int(ds.count) >= channels
    except RasterioIOError:
        return False


def write_block(blocks_dir: Path, block: Block, data: np.ndarray, grid: Any,
                valid: np.ndarray | None = None) -> Path:
    """Write uint8 ``(2, h, w)`` probabilities (``(4, h, w)`` with presence) as a GeoTIFF:
    temporary file, then rename.

    ``valid`` (where both dates have data) becomes the file's internal mask, from which the
    final stage draws the ``coverage`` layer.
    """
    blocks_dir.mkdir(parents=True, exist_ok=True)
    target = block_path(blocks_dir, block)
    tmp = blocks_dir / f".{block.id}.{uuid.uuid4().hex}.tmp"
    profile = {
        "driver": "GTiff", "dtype": "uint8", "count": data.shape[0], "height": block.height,
        "width": block.width, "crs": grid.crs, "transform": grid.window_transform(block.window),
        "compress": "deflate", "tiled": True, "blockxsize": 256, "blockysize": 256,
    }
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            if valid is not None:
                dst.write_mask(valid.astype(np.uint8) * 255)
            for band, name in (*PROBABILITY_BANDS, *PRESENCE_BANDS)[:data.shape[0]]:
                dst.set_band_description(band, name)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target



def write_block_mosaic(out_dir: Path, blocks: list[Block], grid: Any,
                       bands: tuple[tuple[int, str], ...] = PROBABILITY_BANDS,
                       name: str = MOSAIC_NAME) -> Path:
    """``OUT/probabilities.vrt``: every block file as one 2-band uint8 raster of the grid
    (``bands`` of the block files, e.g. ``PRESENCE_BANDS`` as ``OUT/presence.vrt``)."""
    gt = ", ".join(repr(float(v)) for v in grid.transform.to_gdal())
    lines = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">',
             f"  <SRS>{escape(grid.crs.to_wkt())}</SRS>", f"  <GeoTransform>{gt}</GeoTransform>"]
    for band, (source_band, description) in enumerate(bands, start=1):
        lines.append(f'  <VRTRasterBand dataType="Byte" band="{band}">')
        lines.append(f"    <Description>{description}</Description>")
        for b in blocks:
            rel = f"{BLOCKS_DIR}/{b.id}.tif"
            lines.append(
                f'    <SimpleSource><SourceFilename relativeToVRT="1">{rel}</SourceFilename>'
                f"<SourceBand>{source_band}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{b.width}" ySize="{b.height}"/>'
                f'<DstRect xOff="{b.col_off}" yOff="{b.row_off}" xSize="{b.width}" '
                f'ySize="{b.height}"/></SimpleSource>')
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    path = out_dir / name
    tmp = out_dir / f".{name}.{uuid.uuid4().hex}.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


class MosaicReader:
    """Windowed uint8 ``(2, h, w)`` reads of the block mosaic (the ProbabilityStore interface)."""

    def __init__(self, path: Path) -> None:
        self._ds = rasterio.open(path)
        self.height = self._ds.height
        self.width = self._ds.width

    def read(self, window: Any) -> np.ndarray:
        """uint8 ``(2, h, w)`` probabilities at ``window``."""
        return np.asarray(self._ds.read(window=window))

    def close(self) -> None:
        """Close the mosaic."""
        self._ds.close()

    def __enter__(self) -> MosaicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def coverage_from_blocks(out_dir: Path, blocks: list[Block], grid: Any) -> Any:
    """The ``coverage`` layer (processed / nodata) from the blocks' masks."""
    from idou.inference.coverage import CoverageSink

    sink = CoverageSink(grid)
    for block in blocks:
        with rasterio.open(block_path(out_dir / BLOCKS_DIR, block)) as ds:
            sink.write(block.window, None, ds.read_masks(1) > 0)  # type: ignore[arg-type]
    return sink.frame()
