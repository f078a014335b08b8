"""DDP under ``torchrun``-style environment variables: two CPU processes (Gloo) train the same model
on different batches; the gradient all-reduce must leave both ranks with identical weights that
moved away from the initial ones. (NCCL / multi-GPU needs a GPU machine; the code path is the same
apart from the backend and ``device_ids``.)"""
from __future__ import annotations

import dataclasses
import socket

import pytest
import torch
import torch.multiprocessing as mp

from ogfr_core.config import ModelConfig, TrainConfig, to_dict

H, W = 64, 32
MODEL = ModelConfig(backbone="vit_tiny_patch16_224", depth=1, stride=16, drop_path=0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, method: str, out_dir: str, env: dict | None = None) -> None:
    import os

    import torch.distributed as dist

    from ogfr_core.model import build_model
    from ogfr_core.training import Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), **(env or {}))
    torch.set_num_threads(1)
    cfg = TrainConfig(epochs=1, warmup_epochs=0, lr=0.05, log_every=0,
                      model=dataclasses.replace(MODEL, method=method))
    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model = build_model(cfg.model, 4, 2, (H, W))
    meta = dict(model=to_dict(cfg.model), data={"name": "ddp"}, train=to_dict(cfg), num_classes=4,
                num_cameras=2, height=H, width=W, epochs_trained=0, pretrained_weights="",
                init_warning="random", method=method)
    own = torch.cat([p.detach().flatten() for p in model.trainable_parameters()]).clone()
    trainer = Trainer(model, cfg, f"{out_dir}/rank{rank}", meta, occlusion=5.0, steps_per_epoch=2)
    start = torch.cat([p.detach().flatten() for p in model.trainable_parameters()]).clone()
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own batch
    for _ in range(2):
        batch = dict(image=torch.randn(8, 3, H, W, generator=g), z=torch.randint(0, 2, (8, 4), generator=g),
                     camid=torch.arange(8) % 2, label=torch.arange(8) % 4,
                     label_map=torch.randint(0, 9, (8, H, W), generator=g))
        trainer.train_step(batch)
    end = torch.cat([p.detach().flatten() for p in model.trainable_parameters()])
    ddp = isinstance(trainer.net, torch.nn.parallel.DistributedDataParallel)
    torch.save({"world": trainer.world, "ddp": ddp, "own": own, "start": start, "end": end},
               f"{out_dir}/result{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("method", ["ogfr", "baseline"])
def test_ddp_two_cpu_processes_stay_in_sync(tmp_path, method):
    mp.start_processes(_worker, args=(2, _free_port(), method, str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    results = {r: torch.load(tmp_path / f"result{r}.pt") for r in range(2)}
    assert results[0]["ddp"] and results[1]["ddp"]
    results = {r: (v["world"], v["own"], v["start"], v["end"]) for r, v in results.items()}
    assert results[0][0] == results[1][0] == 2
    assert not torch.equal(results[0][1], results[1][1])  # the ranks built different weights,
    assert torch.equal(results[0][2], results[1][2])  # DDP broadcast rank 0's,
    assert torch.equal(results[0][3], results[1][3])  # the all-reduce kept them identical,
    assert not torch.equal(results[0][2], results[0][3])  # and training moved them


def test_torchrun_one_process_runs_the_ddp_path(tmp_path):
    """``torchrun --nproc_per_node 1`` (it sets ``TORCHELASTIC_RUN_ID``) must still wrap the model in
    DDP, so that a one-GPU machine exercises the NCCL/DDP code; a plain process must not."""
    from ogfr_core.model import build_model
    from ogfr_core.training import Trainer

    mp.start_processes(_worker, args=(1, _free_port(), "ogfr", str(tmp_path), {"TORCHELASTIC_RUN_ID": "test"}),
                       nprocs=1, join=True, start_method="spawn")
    result = torch.load(tmp_path / "result0.pt")
    assert result["world"] == 1 and result["ddp"]
    assert not torch.equal(result["start"], result["end"])  # the DDP-wrapped step trained
    cfg = TrainConfig(epochs=1, warmup_epochs=0, log_every=0, model=MODEL)
    plain = Trainer(build_model(cfg.model, 4, 2, (H, W)), cfg, tmp_path / "plain", {"model": {}}, occlusion=5.0,
                    steps_per_epoch=1)
    assert plain.net is plain.model and plain.world == 1
