"""Change chips cut from scenes of the project's own generator (``idou.geo.synthetic``).

Each seed gives one flight pair from :func:`idou.geo.synthetic.flight.make_flight_pair` at its
native 0.2 m. The two flights lie on one pixel lattice with shifted extents; their overlap is
cropped and brought to the model's GSD (an integer factor, e.g. 2 for 0.4 m) the way inference
resamples: the mean of each factor×factor block, as ``idou.geo.raster.align`` reads flights
decimated (``"bilinear"``, GDAL's warper, is what idou 1.0 did). Labels come from the generator's
footprints of both dates through the same derivation as real footprints
(:func:`~idou.training.datasets.footprints.derive_labels_from_footprints`, buildings matched by
id). Nodata of either flight is 255 (ignore) in every mask.

Scenes live in RAM; with ``cache_dir`` they are also kept as ``.npz`` (outside the repository,
e.g. under ``/tmp``) so a second run or a resumed run skips the generator; the cache key holds
the generator's version and a hash of its source, so a changed generator is never mixed in.
Items follow the contract in :mod:`idou.training.datasets.footprints`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from scipy import ndimage

from idou.geo.scoring.metrics import EIGHT_CONNECTED
from idou.training.datasets.footprints import (
    IGNORE,
    derive_labels_from_footprints,
    match_footprints,
)


@dataclass
class GeneratedScene:
    """One generated flight pair on the model grid.

    Attributes:
        before: uint8 H×W×3.
        after: uint8 H×W×3.
        target: uint8 2×H×W (new, demolished; 255 = ignore).
        buildings_before: uint8 H×W.
        buildings_after: uint8 H×W.
        valid: bool H×W, both flights hold data.
        transform: model-grid transform (EPSG:6677).
    """

    before: np.ndarray
    after: np.ndarray
    target: np.ndarray
    buildings_before: np.ndarray
    buildings_after: np.ndarray
    valid: np.ndarray
    transform: Affine


def area_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor``×``factor`` blocks (H and W must be multiples of ``factor``)."""
    if factor == 1:
        return image
    h, w = image.shape[:2]
    blocks = image.reshape(h // factor, factor, w // factor, factor, *image.shape[2:])
    return blocks.astype(np.float32).mean(axis=(1, 3))


def gdal_resample(image: np.ndarray, source: Affine, target: Affine, factor: int,
                  crs: str) -> np.ndarray:
    """Resample an H×W×C image by ``factor`` with GDAL's bilinear warper, as
    :class:`idou.geo.raster.align.AlignedPair` did before it read decimated (idou 1.0)."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    h, w = image.shape[0] // factor, image.shape[1] // factor
    out = np.zeros((image.shape[2], h, w), np.uint8)
    reproject(np.ascontiguousarray(image.transpose(2, 0, 1)), out, src_transform=source,
              src_crs=crs, dst_transform=target, dst_crs=crs, resampling=Resampling.bilinear)
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def make_scene(seed: int, size: int = 2048, factor: int = 2, edge_px: int = 1,
               min_area_m2: float = 4.0, source_gsd_m: float = 0.2,
               resampling: str = "area") -> GeneratedScene:
    """Generate one flight pair and bring it onto the model grid with its labels.

    Args:
        seed: generator seed.
        size: generated flight side in pixels at ``source_gsd_m``.
        factor: integer resampling factor (model GSD = ``factor × source_gsd_m``).
        edge_px: ignore band either side of footprint edges, in model pixels.
        min_area_m2: change pieces smaller than this are ignored.
        source_gsd_m: GSD the generator renders at.
        resampling: ``"area"`` (mean of factor×factor blocks: what inference does, see
            :mod:`idou.geo.raster.align`) or ``"bilinear"`` (GDAL's warper, as idou 1.0 read
            flights).
    """
    from idou.geo.synthetic.flight import make_flight_pair

    pair = make_flight_pair(seed, size, source_gsd_m)
    tb, ta = pair.before_transform, pair.after_transform
    dc = int(round((ta.c - tb.c) / tb.a))
    dr = int(round((ta.f - tb.f) / tb.e))
    c0, c1 = max(0, dc), min(size, dc + size)
    r0, r1 = max(0, dr), min(size, dr + size)
    c1 = c0 + (c1 - c0) // factor * factor
    r1 = r0 + (r1 - r0) // factor * factor
    before = pair.before[r0:r1, c0:c1]
    after = pair.after[r0 - dr:r1 - dr, c0 - dc:c1 - dc]
    valid = (pair.before_valid[r0:r1, c0:c1] & pair.after_valid[r0 - dr:r1 - dr, c0 - dc:c1 - dc])
    gsd = source_gsd_m * factor
    x0, y0 = tb @ (c0, r0)
    transform = Affine(gsd, 0.0, x0, 0.0, -gsd, y0)
    source = Affine(source_gsd_m, 0.0, x0, 0.0, -source_gsd_m, y0)
    if resampling == "area":
        before = np.round(area_downsample(before, factor)).astype(np.uint8)
        after = np.round(area_downsample(after, factor)).astype(np.uint8)
    else:
        before = gdal_resample(before, source, transform, factor, pair.crs)
        after = gdal_resample(after, source, transform, factor, pair.crs)
    valid = area_downsample(valid.astype(np.float32), factor) >= 1.0
    if factor > 1:  # the resampling kernel reaches one model pixel into nodata
        valid = ndimage.binary_erosion(valid, border_value=1)
    appeared, vanished = match_footprints(pair.buildings_before, pair.buildings_after, by="id")
    labels = derive_labels_from_footprints(
        list(pair.buildings_before.geometry.values), list(pair.buildings_after.geometry.values),
        transform, valid.shape, edge_px, int(round(min_area_m2 / gsd ** 2)),
        list(appeared), list(vanished))
    for mask in (labels.buildings_before, labels.buildings_after):
        mask[~valid] = IGNORE
    labels.target[:, ~valid] = IGNORE
    before[~valid] = 0
    after[~valid] = 0
    return GeneratedScene(before, after, labels.target, labels.buildings_before,
                          labels.buildings_after, valid, transform)


@functools.cache
def generator_fingerprint() -> str:
    """Version and a hash of the generator's source: a cached scene is reused only when both
    match (the generator is deterministic for a seed, but its code evolves).

    Computed once per process, when the generator is first used, so it describes the code the
    process runs even if the files change later.
    """
    import idou.geo.synthetic as synthetic
    from idou.geo.synthetic.flight import GENERATOR_VERSION

    digest = hashlib.sha1()
    for path in sorted(Path(synthetic.__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return f"{GENERATOR_VERSION}+{digest.hexdigest()[:10]}"


def _cache_path(cache_dir: Path, key: tuple[object, ...], fingerprint: str | None = None
                ) -> Path:
    stamp = fingerprint or generator_fingerprint()
    digest = hashlib.sha1(repr((stamp, *key)).encode()).hexdigest()[:12]
    return cache_dir / f"scene-{key[0]}-{digest}.npz"


def load_scene(seed: int, size: int, factor: int, edge_px: int, min_area_m2: float,
               cache_dir: Path | None, resampling: str = "area",
               fingerprint: str | None = None) -> GeneratedScene:
    """:func:`make_scene`, through an ``.npz`` cache when ``cache_dir`` is given.

    ``fingerprint`` pins the generator: only scenes cached under that
    :func:`generator_fingerprint` are used (a later phase of a training keeps its scenes even
    after the generator changed); a scene missing from the cache is then an error.
    """
    key = (seed, size, factor, edge_px, min_area_m2, resampling)
    path = None if cache_dir is None else _cache_path(Path(cache_dir), key, fingerprint)
    if fingerprint and fingerprint != generator_fingerprint() and (
            path is None or not path.exists()):
        raise ValueError(f"scene {seed} of generator {fingerprint} is not cached in "
                         f"{cache_dir}; the generator is now {generator_fingerprint()}")
    if path is not None and path.exists():
        with np.load(path) as z:
            return GeneratedScene(z["before"], z["after"], z["target"], z["buildings_before"],
                                  z["buildings_after"], z["valid"], Affine(*z["transform"][:6]))
    scene = make_scene(seed, size, factor, edge_px, min_area_m2, resampling=resampling)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, before=scene.before, after=scene.after, target=scene.target,
                            buildings_before=scene.buildings_before,
                            buildings_after=scene.buildings_after, valid=scene.valid,
                            transform=np.array(tuple(scene.transform)))
        tmp.replace(path)
    return scene


def hard_change_mask(scene: GeneratedScene, max_extension_px: int = 200, rebuilt: bool = True
                     ) -> np.ndarray:
    """Pixels of the hard changes of a scene: rebuilt houses (new and demolished on the same
    pixels; left out with ``rebuilt=False``) and extensions (small new pieces touching a
    first-date building)."""
    new = scene.target[0] == 1
    both = new & (scene.target[1] == 1)
    near_old = ndimage.binary_dilation(scene.buildings_before != 0, iterations=2)
    labels, n = ndimage.label(new & ~both, structure=EIGHT_CONNECTED)
    hard = both.copy() if rebuilt else np.zeros_like(both)
    if n:
        sizes = ndimage.sum_labels(np.ones_like(new), labels, index=np.arange(1, n + 1))
        touching = ndimage.maximum(near_old, labels, index=np.arange(1, n + 1))
        keep = np.flatnonzero((sizes <= max_extension_px) & (np.asarray(touching) > 0)) + 1
        hard |= np.isin(labels, keep)
    return hard


class SyntheticChipDataset:
    """Chips of generated scenes, on a regular grid of each scene's valid area.

    Args:
        seeds: generator seeds, one scene each (keep them disjoint from ``data_samples/``'s and
            from validation/test seeds).
        scene_size: generated flight side in pixels at 0.2 m.
        gsd_m: model GSD; must be an integer multiple of 0.2 m.
        chip_size: chip side in model pixels.
        stride: step between chips (default ``chip_size // 2``).
        edge_px: ignore band either side of footprint edges, in model pixels.
        min_area_m2: change pieces smaller than this are ignored.
        min_valid: chips with a smaller valid fraction are skipped.
        cache_dir: where scenes are cached as ``.npz`` (None = RAM only).
        resampling: ``"area"`` (as inference) or ``"bilinear"``, see :func:`make_scene`.
        emphasis: what ``has_change`` (the flag balanced sampling favours) marks: ``"change"``
            (any change), ``"hard_change"`` (an extension or a rebuilt house, see
            :func:`hard_change_mask`) or ``"extension"``, to dwell on the cases a first
            training misses.
        fingerprint: pin the generator version of cached scenes (see :func:`load_scene`).
    """

    def __init__(self, seeds: Sequence[int], scene_size: int = 2048, gsd_m: float = 0.4,
                 chip_size: int = 128, stride: int | None = None, edge_px: int = 1,
                 min_area_m2: float = 4.0, min_valid: float = 0.6,
                 cache_dir: str | Path | None = None, resampling: str = "area",
                 emphasis: str = "change", fingerprint: str | None = None) -> None:
        factor = gsd_m / 0.2
        if abs(factor - round(factor)) > 1e-6 or round(factor) < 1:
            raise ValueError(f"gsd_m must be a multiple of 0.2 m, got {gsd_m}")
        self.seeds = [int(s) for s in seeds]
        self.chip_size = chip_size
        cache = Path(cache_dir) if cache_dir else None
        self.scenes = [load_scene(s, scene_size, int(round(factor)), edge_px, min_area_m2, cache,
                                  resampling, fingerprint) for s in self.seeds]
        step = stride or max(1, chip_size // 2)
        self.chips: list[tuple[int, int, int]] = []
        self.has_change: list[bool] = []
        if emphasis not in ("change", "hard_change", "extension"):
            raise ValueError(f"emphasis must be change, hard_change or extension, not "
                             f"{emphasis!r}")
        for k, scene in enumerate(self.scenes):
            hard = (None if emphasis == "change"
                    else hard_change_mask(scene, rebuilt=emphasis == "hard_change"))
            h, w = scene.valid.shape
            for r in range(0, max(1, h - chip_size + 1), step):
                for c in range(0, max(1, w - chip_size + 1), step):
                    if scene.valid[r:r + chip_size, c:c + chip_size].mean() < min_valid:
                        continue
                    self.chips.append((k, r, c))
                    if hard is not None:
                        self.has_change.append(bool(hard[r:r + chip_size, c:c + chip_size].any()))
                        continue
                    t = scene.target[:, r:r + chip_size, c:c + chip_size]
                    self.has_change.append(bool((t == 1).sum() >= 16))

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        k, r, c = self.chips[index]
        s = self.scenes[k]
        win = (slice(r, r + self.chip_size), slice(c, c + self.chip_size))
        return {"before": s.before[win].copy(), "after": s.after[win].copy(),
                "target": s.target[(slice(None), *win)].copy(),
                "buildings_before": s.buildings_before[win].copy(),
                "buildings_after": s.buildings_after[win].copy()}
