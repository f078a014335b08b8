"""Issue 24 probes (seconds on a CPU; not tests, they print numbers): the FED and FPC switches on 16 real
CUHK03-NP crops (4 ids x 4, 64x32, tests/_real_batch.py), ViT-Tiny 2 blocks, SGD lr 0.01.

* FED: the memory-contrastive term L_C and the other terms over 20 steps with ``memory_init``
  first_batch vs train_pass and ``memory_update`` batch_mean vs per_sample. Here the "training set" of
  the pass is the same 16 crops, so both initialisations put the sample in its centre (first_batch in
  train mode, train_pass in eval mode): this probe cannot show the trivial-positive effect, only that
  the switches run and how they move the terms.
* FPC: after 20 steps with ``decoder_input`` final vs parallel, each image consolidated with itself
  as its only neighbour: normalised distance to its own gallery feature and whether that is its
  nearest gallery feature (query side sparse, as at test time).

Run: OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/probe_peer_switches.py
"""
import dataclasses
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, "tests")
from _real_batch import H, W, real_batch  # noqa: E402
from conftest import SHARED_DATA  # noqa: E402

from ogfr_core.config import FEDConfig, FPCConfig, ModelConfig, TrainConfig  # noqa: E402
from ogfr_core.model import build_model  # noqa: E402
from ogfr_core.training import Trainer  # noqa: E402

STEPS = 20
batch = real_batch(SHARED_DATA)


def train(model_cfg, init_pass: bool = False):
    cfg = TrainConfig(epochs=1, warmup_epochs=0, lr=0.01, log_every=0, model=model_cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model, 4, 2, (H, W))
    if init_pass:
        model.initialize_from_training_set([{k: batch[k] for k in ("image", "camid", "label")}])
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(model, cfg, d, {"model": {}}, occlusion=5.0, steps_per_epoch=STEPS)
        hist = [tr.train_step(batch) for _ in range(STEPS)]
    return model, hist


def fmt(hist, key):
    first, last = np.mean([h[key] for h in hist[:3]]), np.mean([h[key] for h in hist[-3:]])
    return f"{key.split('/')[-1]} {first:.3g} -> {last:.3g}"


base = ModelConfig(backbone="vit_tiny_patch16_224", depth=2, stride=12, patch_size=16, drop_path=0.0)
print(f"FED ({STEPS} steps; mean of the first / last 3)")
for init in ("first_batch", "train_pass"):
    for update in ("batch_mean", "per_sample"):
        mc = dataclasses.replace(base, method="fed", fed=FEDConfig(memory_init=init, memory_update=update))
        _, hist = train(mc, init_pass=init == "train_pass")
        print(f"  {init:11s} {update:10s} step-1 contrast {hist[0]['loss/contrast']:.3f} | "
              + " | ".join(fmt(hist, f"loss/{k}") for k in ("contrast", "id", "total")))

print(f"FPC ({STEPS} steps, then each image consolidated with itself as its only neighbour)")
for mode in ("final", "parallel"):
    mc = dataclasses.replace(base, method="fpc", fpc=FPCConfig(neighbours=3, decoder_input=mode))
    model, hist = train(mc)
    model.eval()
    with torch.no_grad():
        img, cam = batch["image"], batch["camid"]
        trunk, final = model.encode(img, cam, 1.0)
        gallery = F.normalize(model.neck(final[:, 0]), dim=1)
        memory = model.consolidation_tokens(trunk, final)
        query = model.consolidation_tokens(*model.encode(img, cam))
        rec = F.normalize(model.rec_neck(model.consolidate(query, memory[:, None])), dim=1)
        sparse = F.normalize(model.neck(model.sparse_tokens(img, cam)[:, 0]), dim=1)
    d = torch.cdist(rec, gallery)
    own = (d.argmin(1) == torch.arange(len(d))).float().mean()
    print(f"  {mode:8s} distance to own gallery feature {float(d.diagonal().mean()):.3f} "
          f"(to others {float(d[~torch.eye(len(d), dtype=torch.bool)].mean()):.3f}; sparse [cls] to own "
          f"{float((sparse - gallery).norm(dim=1).mean()):.3f}); own nearest {float(own):.2f} | "
          + fmt(hist, "loss/total"))
