"""The FLIGHT.toml of `idou batch`: what a whole-flight run reads, checked before anything runs.

Example::

    # flight_2025.toml — paths are relative to this file
    output = "runs/2025"             # folder for the journal, blocks, status and the GeoPackage
    model = "default"                # "default", a .onnx path, or "models:/NAME@ALIAS"
    parcels = "parcels.gpkg"         # optional: 筆 polygons for the candidate parcels
    buildings = "buildings.gpkg"     # optional: existing buildings (家屋現況図)
    aoi = "city.gpkg"                # optional: area of interest
    encoding = "cp932"               # optional: attribute encoding of parcels and buildings
    chiban_column = "CHIBAN"         # optional: the parcels' 地番 column under another name
    block_size = 4096                # pixels per work unit side (plus the model's overlap as halo)
    threads = 2                      # ONNX Runtime threads per worker (default: cores / workers)
    workers = 1                      # local worker processes (overridden by --workers)
    dashboard = "127.0.0.1:8787"     # optional: the local Dask dashboard (default: none)
    allow_network = false            # optional: allow /vsicurl/ and other network sources

    [before]
    path = "ortho_2024/"             # a file, a VRT, a folder of sheets or a glob ("*.tif")
    crs = "EPSG:6677"                # sheets without a CRS (TIFF + .tfw); the grid lat/lon
                                     # or Web Mercator sheets are warped onto

    [after]
    paths = ["ortho_2025/09LD123.tif", "ortho_2025/09LD124.tif"]   # or a list of sheets
"""

from __future__ import annotations

import glob
import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from idou.errors import (
    InputNotFound,
    InvalidOption,
    OutputConflict,
    UnreadableInput,
    UserInputError,
)
from idou.geo.files.text_files import read_text
from idou.geo.raster.sources import SHEET_SUFFIXES
from idou.geo.vector.vector_files import check_encoding, vector_exists

DEFAULT_BLOCK_SIZE = 4096
MIN_BLOCK_SIZE = 64

_TOP_KEYS = {
    "before", "after", "output", "model", "parcels", "buildings", "aoi", "block_size",
    "threads", "workers", "device", "max_attempts", "encoding", "chiban_column", "dashboard",
    "allow_network",
}
_SIDE_KEYS = {"path", "paths", "crs"}


@dataclass(frozen=True)
class FlightSide:
    """One date of the flight: the sheets (or one raster) and the CRS for sheets that lack one."""

    name: str
    sheets: tuple[Path, ...]
    crs: str | None = None
    spec: str | None = None

    @property
    def source_spec(self) -> str | list[str]:
        """What `idou.geo.raster.sources.open_source` takes: one path, or the list of sheets."""
        if len(self.sheets) == 1:
            return str(self.sheets[0])
        return [str(p) for p in self.sheets]


@dataclass(frozen=True)
class FlightConfig:
    """A validated FLIGHT.toml; every path is absolute."""

    source: Path
    before: FlightSide
    after: FlightSide
    output: Path
    model: str = "default"
    parcels: Path | None = None
    buildings: Path | None = None
    aoi: Path | None = None
    block_size: int = DEFAULT_BLOCK_SIZE
    threads: int | None = None
    workers: int = 1
    device: str = "cpu"
    max_attempts: int = 2
    encoding: str | None = None
    chiban_column: str | None = None
    dashboard: str | None = None
    allow_network: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """A short hash of what decides the block results (inputs, model, block size).

        A resumed run must have the same fingerprint as the run that wrote the journal.
        """
        data = {
            "before": [str(p) for p in self.before.sheets], "before_crs": self.before.crs,
            "after": [str(p) for p in self.after.sheets], "after_crs": self.after.crs,
            "aoi": str(self.aoi) if self.aoi else None, "model": self.model,
            "block_size": self.block_size, "device": self.device,
        }
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (for status files and the run summary)."""
        data = asdict(self)

        def _plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, (list, tuple)):
                return [_plain(v) for v in value]
            if isinstance(value, dict):
                return {k: _plain(v) for k, v in value.items()}
            return value

        return {k: _plain(v) for k, v in data.items()}


def load_flight_config(path: str | Path) -> FlightConfig:
    """Read and validate a FLIGHT.toml; every problem is a one-sentence `UserInputError`.

    Paths are resolved relative to the TOML file. Sheets are checked to exist (a folder must hold
    at least one raster, a glob must match something); whether they open is `idou batch --check`'s
    job (see `idou.inference.batch_check.check_flight`).
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"{path} does not exist; pass the path of a FLIGHT.toml file.")
    try:
        raw = tomllib.loads(read_text(path, "flight file"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UnreadableInput(f"{path.name} is not valid TOML ({exc}); fix the syntax.") from exc
    base = path.resolve().parent
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise InvalidOption(
            f"{path.name} has unknown key(s) {', '.join(unknown)}; "
            f"allowed are {', '.join(sorted(_TOP_KEYS))}."
        )
    for side in ("before", "after"):
        if side not in raw:
            raise UserInputError(f"{path.name} has no [{side}] table; add one with path = ...")
    if "output" not in raw:
        raise UserInputError(f"{path.name} has no output folder; add output = \"DIR\".")
    model = raw.get("model", "default")
    if not isinstance(model, str) or not model:
        raise InvalidOption(
            f"{path.name}: model must be \"default\", a path or models:/NAME@ALIAS.")
    if model != "default" and not model.startswith("models:/"):
        model = str(_resolve(base, model))
    config = FlightConfig(
        source=path.resolve(),
        before=_side(raw["before"], "before", base, path.name),
        after=_side(raw["after"], "after", base, path.name),
        output=_resolve(base, _string(raw, "output", path.name)),
        model=model,
        parcels=_optional_file(raw, "parcels", base, path.name),
        buildings=_optional_file(raw, "buildings", base, path.name),
        aoi=_optional_file(raw, "aoi", base, path.name),
        block_size=_int(raw, "block_size", DEFAULT_BLOCK_SIZE, MIN_BLOCK_SIZE, path.name),
        threads=_int(raw, "threads", 1, 1, path.name) if "threads" in raw else None,
        workers=_int(raw, "workers", 1, 1, path.name),
        device=_device(raw, path.name),
        max_attempts=_int(raw, "max_attempts", 2, 1, path.name),
        encoding=_string(raw, "encoding", path.name) if "encoding" in raw else None,
        chiban_column=(_string(raw, "chiban_column", path.name) if "chiban_column" in raw
                       else None),
        dashboard=_dashboard(raw, path.name),
        allow_network=_bool(raw, "allow_network", path.name),
    )
    check_encoding(config.encoding)
    if config.output.exists() and not config.output.is_dir():
        raise OutputConflict(f"{path.name}: output {config.output} is a file; name a folder.")
    return config


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _string(raw: dict[str, Any], key: str, name: str) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value:
        raise InvalidOption(f"{name}: {key} must be a non-empty string path.")
    return value


def _optional_file(raw: dict[str, Any], key: str, base: Path, name: str) -> Path | None:
    if key not in raw:
        return None
    p = _resolve(base, _string(raw, key, name))
    if not vector_exists(p):
        raise InputNotFound(f"{name}: {key} file {p} does not exist; fix the path.")
    return p


def _int(raw: dict[str, Any], key: str, default: int, minimum: int, name: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidOption(f"{name}: {key} must be a whole number >= {minimum}, not {value!r}.")
    return value


def _device(raw: dict[str, Any], name: str) -> str:
    value = raw.get("device", "cpu")
    if value not in ("cpu", "cuda"):
        raise InvalidOption(f"{name}: device must be \"cpu\" or \"cuda\", not {value!r}.")
    return str(value)


def _dashboard(raw: dict[str, Any], name: str) -> str | None:
    """The local Dask dashboard's address: none unless asked; a bare port means 127.0.0.1."""
    value = raw.get("dashboard")
    if value is None or value is False:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
        return f"127.0.0.1:{value}"
    if not isinstance(value, str) or not value.strip() or value.strip().startswith(":"):
        raise InvalidOption(f"{name}: dashboard must be an address like \"127.0.0.1:8787\" "
                            "(or leave it out for no dashboard).")
    return value.strip()


def _bool(raw: dict[str, Any], key: str, name: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise InvalidOption(f"{name}: {key} must be true or false (without quotes).")
    return value


def _side(table: Any, side: str, base: Path, name: str) -> FlightSide:
    if not isinstance(table, dict):
        raise InvalidOption(f"{name}: [{side}] must be a table with path = ... or paths = [...].")
    unknown = sorted(set(table) - _SIDE_KEYS)
    if unknown:
        raise InvalidOption(
            f"{name}: [{side}] has unknown key(s) {', '.join(unknown)}; use path, paths and crs."
        )
    if ("path" in table) == ("paths" in table):
        raise InvalidOption(
            f"{name}: [{side}] needs exactly one of path = \"...\" or paths = [...].")
    crs = table.get("crs")
    if crs is not None and (not isinstance(crs, str) or not crs):
        raise InvalidOption(f"{name}: [{side}] crs must be a string such as \"EPSG:6677\".")
    if "path" in table:
        spec = table["path"]
        if not isinstance(spec, str) or not spec:
            raise InvalidOption(f"{name}: [{side}] path must be a non-empty string.")
        sheets = _expand(spec, base, side, name)
    else:
        items = table["paths"]
        if not isinstance(items, list) or not items or not all(
            isinstance(i, str) and i for i in items
        ):
            raise InvalidOption(f"{name}: [{side}] paths must be a non-empty list of paths.")
        spec = None
        sheets = []
        for item in items:
            p = _resolve(base, item)
            if not p.is_file():
                raise InputNotFound(f"{name}: [{side}] sheet {p} does not exist; fix the list.")
            sheets.append(p)
    return FlightSide(name=side, sheets=tuple(sheets), crs=crs, spec=spec)


def _expand(spec: str, base: Path, side: str, name: str) -> list[Path]:
    """A file, a folder of sheets, or a glob → the sorted list of rasters."""
    if glob.has_magic(spec):
        pattern = str(_resolve(base, spec))
        found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not found:
            raise InputNotFound(f"{name}: [{side}] pattern {pattern} matches no file; fix it.")
        return found
    p = _resolve(base, spec)
    if p.is_dir():
        found = sorted(q for q in p.iterdir() if q.is_file()
                       and q.suffix.lower() in SHEET_SUFFIXES and not q.name.startswith("."))
        if not found:
            raise UserInputError(
                f"{name}: [{side}] folder {p} holds no raster sheets (.tif, .jpg, .png, .jp2)."
            )
        return found
    if not p.is_file():
        raise InputNotFound(f"{name}: [{side}] path {p} does not exist; fix the path.")
    return [p]
