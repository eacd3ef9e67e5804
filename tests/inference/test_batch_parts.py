"""The parts of `idou batch`: FLIGHT.toml validation, block plans, the journal, status files."""

from __future__ import annotations

import json
import multiprocessing
import stat
from pathlib import Path

import pytest

from idou.errors import OutputConflict, UserInputError
from idou.geo.files.file_mode import usual_file_mode
from idou.inference.batch_config import load_flight_config
from idou.inference.batch_report import StatusFile, read_status, write_summary_html
from idou.inference.blocks import plan_blocks, snap_block_size
from idou.inference.journal import Journal


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def _flight(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "flight.toml"
    path.write_text(body, encoding="utf-8")
    return path


# --- FLIGHT.toml ------------------------------------------------------------------------------


def test_config_expands_folders_globs_and_lists_relative_to_the_file(tmp_path: Path) -> None:
    for name in ("b/09LD2.tif", "b/09LD1.tif", "b/notes.txt", "a/x1.tif", "a/x2.tif"):
        _touch(tmp_path / name)
    _touch(tmp_path / "parcels.gpkg")
    cfg = load_flight_config(_flight(tmp_path, """
output = "out"
model = "m.onnx"
parcels = "parcels.gpkg"
block_size = 1024
[before]
path = "b"
crs = "EPSG:6677"
[after]
path = "a/*.tif"
"""))
    assert [p.name for p in cfg.before.sheets] == ["09LD1.tif", "09LD2.tif"]
    assert cfg.before.crs == "EPSG:6677"
    assert [p.name for p in cfg.after.sheets] == ["x1.tif", "x2.tif"]
    assert cfg.output == tmp_path / "out"
    assert cfg.model == str(tmp_path / "m.onnx")
    assert cfg.parcels == tmp_path / "parcels.gpkg"
    assert cfg.block_size == 1024 and cfg.workers == 1


def test_config_keeps_registry_and_default_model_names(tmp_path: Path) -> None:
    _touch(tmp_path / "b.tif")
    body = 'output = "o"\nmodel = "models:/idou@champion"\n[before]\npath = "b.tif"\n' \
           '[after]\npaths = ["b.tif"]\n'
    assert load_flight_config(_flight(tmp_path, body)).model == "models:/idou@champion"


@pytest.mark.parametrize(("body", "needle"), [
    ('output = "o"\n[before]\npath = "b.tif"\n', "[after]"),
    ('[before]\npath = "b.tif"\n[after]\npath = "b.tif"\n', "output"),
    ('output = "o"\nblok_size = 3\n[before]\npath = "b.tif"\n[after]\npath = "b.tif"\n',
     "blok_size"),
    ('output = "o"\nblock_size = 10\n[before]\npath = "b.tif"\n[after]\npath = "b.tif"\n',
     "block_size"),
    ('output = "o"\nworkers = "2"\n[before]\npath = "b.tif"\n[after]\npath = "b.tif"\n',
     "workers"),
    ('output = "o"\n[before]\npath = "missing/"\n[after]\npath = "b.tif"\n', "missing"),
    ('output = "o"\n[before]\npath = "b.tif"\n[after]\npaths = ["b.tif", "gone.tif"]\n',
     "gone.tif"),
    ('output = "o"\n[before]\npath = "*.jp2"\n[after]\npath = "b.tif"\n', "matches no file"),
    ('output = "o"\nparcels = "p.gpkg"\n[before]\npath = "b.tif"\n[after]\npath = "b.tif"\n',
     "p.gpkg"),
    ('output = "o"\n[before]\npath = "b.tif"\npaths = ["b.tif"]\n[after]\npath = "b.tif"\n',
     "exactly one"),
    ('output = "o"\n[before\npath = "b.tif"\n', "not valid TOML"),
])
def test_config_errors_are_one_sentence_naming_the_problem(tmp_path: Path, body: str,
                                                           needle: str) -> None:
    _touch(tmp_path / "b.tif")
    with pytest.raises(UserInputError) as info:
        load_flight_config(_flight(tmp_path, body))
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_config_fingerprint_follows_inputs_not_worker_count(tmp_path: Path) -> None:
    _touch(tmp_path / "b.tif")
    _touch(tmp_path / "c.tif")
    base = 'output = "o"\n[before]\npath = "b.tif"\n[after]\npath = "{after}"\n'
    one = load_flight_config(_flight(tmp_path, base.format(after="b.tif")))
    more = load_flight_config(_flight(tmp_path, "workers = 4\n" + base.format(after="b.tif")))
    other = load_flight_config(_flight(tmp_path, base.format(after="c.tif")))
    assert one.fingerprint() == more.fingerprint() != other.fingerprint()


# --- blocks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height", "size", "stride"),
                         [(1000, 700, 256, 1), (1000, 700, 256, 48), (97, 1301, 64, 48),
                          (5, 5, 4096, 448)])
def test_blocks_tile_the_grid_exactly(width: int, height: int, size: int, stride: int) -> None:
    blocks = plan_blocks(width, height, size, halo=16, stride=stride)
    cover = [[0] * width for _ in range(height)]
    for b in blocks:
        assert b.col_off % snap_block_size(size, stride) == 0
        for r in range(b.row_off, b.row_off + b.height):
            for c in range(b.col_off, b.col_off + b.width):
                cover[r][c] += 1
    assert all(v == 1 for row in cover for v in row)
    assert len({b.id for b in blocks}) == len(blocks)


def test_block_size_snaps_to_the_tile_stride() -> None:
    assert snap_block_size(4096, 448) == 4032
    assert snap_block_size(100, 448) == 448
    block = plan_blocks(1000, 1000, 300, halo=16, stride=100)[5]
    halo = block.halo_window(1000, 1000)
    assert (block.row_off, block.col_off, block.width) == (300, 300, 300)
    assert (halo.row_off, halo.col_off, halo.width, halo.height) == (284, 284, 332, 332)


# --- journal ----------------------------------------------------------------------------------


def test_journal_records_states_and_refuses_another_plan(tmp_path: Path) -> None:
    blocks = plan_blocks(300, 200, 100)
    with Journal(tmp_path / "j.sqlite") as journal:
        assert journal.initialise(blocks, "abc", {"grid": "300x200"}) is True
        journal.mark_running(blocks[0].id, "w1")
        journal.mark_done(blocks[0].id, 1.5, "w1", {"model": 1.0, "tiles_run": 4})
        journal.mark_running(blocks[1].id, "w2")
        journal.mark_failed(blocks[1].id, "boom")
        journal.mark_running(blocks[2].id)
    with Journal(tmp_path / "j.sqlite") as journal:
        assert journal.initialise(blocks, "abc") is False
        assert journal.counts() == {"pending": 3, "running": 1, "done": 1, "failed": 1,
                                    "total": 6}
        assert journal.reset_interrupted() == 1
        failed = journal.records(["failed"])
        assert [(r.block.id, r.error, r.attempts) for r in failed] == [(blocks[1].id, "boom", 1)]
        assert journal.done_seconds() == (100 * 100, 1.5)
        assert journal.meta()["grid"] == "300x200"
        with pytest.raises(OutputConflict, match="other inputs"):
            journal.initialise(blocks, "xyz")


def _hammer(path: str, ids: list[str]) -> None:
    with Journal(path) as journal:
        for block_id in ids:
            journal.mark_running(block_id, "p")
            journal.mark_done(block_id, 0.1, "p")


def test_journal_is_safe_for_several_processes(tmp_path: Path) -> None:
    blocks = plan_blocks(400, 400, 20)
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        journal.initialise(blocks, "k")
    ids = [b.id for b in blocks]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(str(path), ids[i::4])) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Journal(path) as journal:
        assert journal.counts()["done"] == len(ids)
        assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- status and summary -----------------------------------------------------------------------


def test_status_file_is_valid_json_with_progress_figures(tmp_path: Path) -> None:
    status = StatusFile(tmp_path, total_pixels=1_000_000, pixel_area_m2=0.04,
                        static={"flight": "f.toml"})
    status.add_pixels(250_000)
    data = status.update("running", {"total": 4, "done": 1, "pending": 3}, done_pixels=250_000)
    on_disk = read_status(tmp_path)
    assert on_disk == json.loads(json.dumps(data))
    assert on_disk["km2"] == {"total": 0.04, "done": 0.01}
    assert on_disk["blocks"]["done"] == 1 and on_disk["flight"] == "f.toml"
    assert on_disk["mpx_per_s"] >= 0 and on_disk["eta_s"] is not None
    assert not list(tmp_path.glob(".*tmp"))
    # monitoring run by another account can read it (not mkstemp's 0600)
    assert stat.S_IMODE((tmp_path / "status.json").stat().st_mode) == usual_file_mode()
    coarse = StatusFile(tmp_path, total_pixels=1_000_000, pixel_area_m2=0.16, input_scale=4.0)
    coarse.add_pixels(250_000)
    coarse.started -= 10.0
    data = coarse.update("running", {"total": 4, "done": 1}, done_pixels=250_000)
    assert data["pixels"]["input_total"] == 4_000_000  # a 0.4 m model on a 0.2 m flight
    assert data["mpx_per_s"] == pytest.approx(0.1, rel=0.05)  # input pixels, as detect counts


def test_summary_html_escapes_and_lists_classes(tmp_path: Path) -> None:
    path = write_summary_html(
        tmp_path / "summary.html", {"state": "done", "blocks": {"done": 2, "total": 2},
                                    "km2": {"done": 1.0, "total": 1.0}, "mpx_per_s": 3.0},
        {"新築": {"count": 3, "area_m2": 120.0}}, {"model": "<idou>"})
    text = path.read_text(encoding="utf-8")
    assert "新築" in text and "&lt;idou&gt;" in text and "<idou>" not in text


def test_summary_html_reports_every_sitting_and_a_short_model_row(tmp_path: Path) -> None:
    first = {"started_at": "2026-01-01T20:00:00Z", "updated_at": "2026-01-01T21:00:00Z",
             "elapsed_s": 3600.0, "input_px": 7_200_000_000, "state": "interrupted"}
    last = {"state": "done", "started_at": "2026-01-02T20:00:00Z",
            "updated_at": "2026-01-02T20:30:00Z", "elapsed_s": 1800.0,
            "pixels": {"input_this_run": 1_800_000_000}, "mpx_per_s": 1.0,
            "blocks": {"done": 2, "total": 2}, "km2": {"done": 1.0, "total": 1.0}}
    run_info = {"model_name": "idou-default", "model_version": "1.3.0",
                "model_sha256": "ab" * 32, "threshold_new": 0.35, "threshold_demolished": 0.4,
                "model_card": {"name": "idou-default", "metrics": {"x" * 40: list(range(500))}}}
    text = write_summary_html(tmp_path / "summary.html", last, {}, run_info, sittings=[first],
                              card_href="model/abcd.card.md").read_text(encoding="utf-8")
    assert "5400 s in 2 sittings" in text
    assert "2026-01-01T20:00:00Z" in text.split("Sittings")[0]  # the run's start, not the last
    assert "1.67" in text  # (7200 + 1800) Mpx / 5400 s, not the last sitting's 1.00
    assert text.count("<td>interrupted</td>") == 1 and "<td>done</td>" in text
    model = text.split("モデル model</th><td>", 1)[1].split("</td>", 1)[0]
    assert "idou-default 1.3.0" in model and "abababababababab" in model
    assert "new 0.35, demolished 0.4" in model and 'href="model/abcd.card.md"' in model
    assert "x" * 40 not in text and len(text) < 6000


def test_a_second_run_on_the_same_output_folder_is_refused(tmp_path: Path) -> None:
    import fcntl

    from idou.inference.batch import LOCK_NAME, run_batch

    _touch(tmp_path / "b.tif")
    config = load_flight_config(_flight(
        tmp_path, 'output = "out"\n[before]\npath = "b.tif"\n[after]\npath = "b.tif"\n'))
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / LOCK_NAME, "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputConflict, match="another idou batch is running"):
            run_batch(config)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [LOCK_NAME]


def test_two_sittings_started_within_one_second_are_both_kept(tmp_path: Path) -> None:
    from idou.inference.batch_report import StatusFile, merge_sitting, sitting

    sittings: list[dict[str, object]] = []
    for state in ("failed", "done"):  # a resume right after a failure, in the same second
        status_file = StatusFile(tmp_path, total_pixels=4, pixel_area_m2=1.0)
        status_file.started = 1_800_000_000.0
        status = status_file.update(state, {"total": 1}, done_pixels=4)
        sittings = merge_sitting(sittings, sitting(status))
    assert [s["state"] for s in sittings] == ["failed", "done"]
