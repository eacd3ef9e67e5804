"""Data-parallel training: two CPU processes under torchrun (gloo) train one model in lockstep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Runs in each torchrun process: join the group with idou.training.ddp, train with the real loop
# (idou.training.loop.train on a TOML config), then dump this rank's weights for comparison.
WORKER = textwrap.dedent('''
    import json, sys
    from pathlib import Path

    import torch

    import idou.training.loop as loop
    from idou.training.config import load_config
    from idou.training.ddp import cleanup, init_distributed

    config_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    nets = []
    Original = loop.SiameseChangeNet

    class Recorded(Original):  # keep a handle on the network the loop builds
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            nets.append(self)

    loop.SiameseChangeNet = Recorded
    info = init_distributed(device="cpu")
    result = loop.train(load_config(config_path), resume=False, log_mlflow=False,
                        progress=False)
    params = {k: v.detach().clone() for k, v in nets[0].named_parameters()}
    torch.save(params, out / f"rank{info.rank}.pt")
    (out / f"rank{info.rank}.json").write_text(json.dumps({
        "rank": info.rank, "world_size": info.world_size, "backend": info.backend,
        "global_step": result.global_step}))
    cleanup()
''')


def _levir_chips(root: Path, n: int = 6, size: int = 64) -> None:
    rng = np.random.default_rng(0)
    for folder in ("A", "B", "label"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        before = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        after = before.copy()
        label = np.zeros((size, size), np.uint8)
        if i % 2 == 0:
            after[16:40, 20:44] = (230, 60, 50)
            label[16:40, 20:44] = 255
        Image.fromarray(before).save(root / "A" / f"c{i}.png")
        Image.fromarray(after).save(root / "B" / f"c{i}.png")
        Image.fromarray(label).save(root / "label" / f"c{i}.png")


@pytest.mark.slow
@pytest.mark.train
def test_two_gloo_processes_train_identical_weights(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    _levir_chips(tmp_path / "levir")
    run_dir = tmp_path / "run"
    config = tmp_path / "ddp.toml"
    config.write_text(textwrap.dedent(f'''
        name = "ddp-test"
        seed = 3
        run_dir = "{run_dir}"

        [model]
        backbone = "mobilenet_v3_large"
        decoder_channels = [16, 16, 8, 8, 8]
        aux_buildings = false

        [[train_data]]
        kind = "levir"
        root = "{tmp_path / 'levir'}"

        [train]
        epochs = 1
        batch_size = 2
        chips_per_epoch = 8
        threads = 1
        export_onnx = false
        sample_images = 0

        [augment]
        enabled = true

        [contract]
        tile_size = 64
        tile_overlap = 16
    '''), encoding="utf-8")
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(worker), str(config), str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1]
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in reports)
    # 8 chips per epoch shared by 2 ranks, batches of 2: two optimiser steps on each rank.
    assert [r["global_step"] for r in reports] == [2, 2]

    w0 = torch.load(out / "rank0.pt", weights_only=True)
    w1 = torch.load(out / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # gradients were all-reduced
    # Only rank 0 writes the run's checkpoints, and they hold the trained weights.
    from idou.training.checkpoints import load_checkpoint

    ckpt = load_checkpoint(run_dir / "last.ckpt")
    assert ckpt["global_step"] == 2
    assert all(torch.equal(ckpt["model"][k], w0[k]) for k in w0)


def test_without_torchrun_it_is_one_process_and_touches_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from idou.training.ddp import cleanup, init_distributed

    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    info = init_distributed(device="cpu")
    assert (info.rank, info.world_size, info.backend) == (0, 1, None)
    assert info.is_main and not info.distributed
    assert not torch.distributed.is_initialized()
    cleanup()  # a no-op without a group
