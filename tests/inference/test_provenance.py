"""One provenance builder: `idou detect` and `idou batch` record the same run_info fields."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from affine import Affine
from rasterio.crs import CRS

from idou.inference.contract import ModelContract
from idou.inference.provenance import run_info
from idou.version import __version__


def _parts(tmp_path: Path) -> tuple[SimpleNamespace, SimpleNamespace, SimpleNamespace]:
    (tmp_path / "b.tif").write_bytes(b"before")
    contract = ModelContract(threshold_new=0.3, threshold_demolished=0.4)
    model = SimpleNamespace(contract=contract, card=None, spec="default", sha256="abc")
    grid = SimpleNamespace(crs=CRS.from_epsg(6677), gsd=0.4, width=10, height=20,
                           transform=Affine(0.4, 0, 0, 0, -0.4, 0))
    report = SimpleNamespace(grid=grid, misregistration_px=None)
    source = SimpleNamespace(label="b.tif", files=[tmp_path / "b.tif"])
    return model, report, source


def test_detect_records_the_thresholds_used_and_the_tuned_ones(tmp_path: Path) -> None:
    model, report, source = _parts(tmp_path)
    info = run_info(model, report, source, source, thresholds=(0.1, 0.2))
    assert info["idou_version"] == __version__
    assert (info["threshold_new"], info["threshold_demolished"]) == (0.1, 0.2)
    assert info["thresholds_tuned"] == (0.3, 0.4)
    assert info["before"]["files"][0]["hash_method"] == "sha256"
    assert list(info)[-1] == "misregistration_px"


def test_batch_records_the_models_thresholds_and_may_skip_hashing(tmp_path: Path) -> None:
    model, report, source = _parts(tmp_path)
    info = run_info(model, report, source, source, hashes=False)
    assert (info["threshold_new"], info["threshold_demolished"]) == (0.3, 0.4)
    assert "thresholds_tuned" not in info
    assert info["after"]["files"] == [str(tmp_path / "b.tif")]
