"""PGFL-KD Eq. (4) probe (issue 24): 16 real CUHK03-NP crops, ViT-Tiny 2 blocks, 64x32, 20 SGD steps at lr 0.01,
the three readings literal / lambda_cl = 0 / normalized; prints the loss terms (mean of the first and last 3 steps).
Run: OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/probe_pgfl_kd_cl.py (seconds)."""
import dataclasses, sys, tempfile, numpy as np, torch
sys.path.insert(0, "tests")
from _real_batch import H, W, real_batch
from conftest import SHARED_DATA
from ogfr_core.config import ModelConfig, PGFLKDConfig, TrainConfig
from ogfr_core.model import build_model
from ogfr_core.training import Trainer
TINY = ModelConfig(backbone="vit_tiny_patch16_224", depth=2, stride=12, patch_size=16, drop_path=0.0, method="pgfl_kd")
batch = real_batch(SHARED_DATA)
for name, p in [("literal", PGFLKDConfig()), ("lambda_cl=0", PGFLKDConfig(lambda_cl=0.0)),
                ("normalized", PGFLKDConfig(cl_form="normalized"))]:
    cfg = TrainConfig(epochs=1, warmup_epochs=0, lr=0.01, log_every=0, model=dataclasses.replace(TINY, pgfl_kd=p))
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(build_model(cfg.model, 4, 2, (H, W)), cfg, d, {"model": {}}, occlusion=5.0, steps_per_epoch=20)
        h = [tr.train_step(batch) for _ in range(20)]
    f = lambda k, s: np.mean([x[k] for x in h[s]])
    print(f"{name:12s} L_CL {f('loss/cl', slice(0,3)):.3g} -> {f('loss/cl', slice(-3,None)):.3g}  "
          f"L_MCL {f('loss/mcl', slice(0,3)):.3g} -> {f('loss/mcl', slice(-3,None)):.3g}  "
          f"reid_g {f('loss/reid_g', slice(0,3)):.3g} -> {f('loss/reid_g', slice(-3,None)):.3g}")
