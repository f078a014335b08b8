"""Fixed-mask reward probe of the FEP agent (issue 23 item 1; :mod:`ogfr_core.evaluation.fep_probe`).

On N training images (parse status ok, index order, the holistic view without augmentation, the
teacher branch by default), the mean Eq. (8) reward and p^m of fixed masks — erase nothing, the
background tokens (by the parsing label maps), the same number of random tokens, the body tokens,
all tokens — with standard errors. Writes JSON (default ``reports/fep_probe.json``).

Usage (after ``dvc repro train``)::

    nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks.probe_fep_reward \\
        --checkpoint models/<data.name>/model.pt --images 512 --out reports/fep_probe.json

Batches are ``--batch`` images (default 64, the training batch P×K): the BNNeck reads the batch's
statistics, as in training. Not a test; prints the table. The DVC stage ``fep_probe`` runs it on the
default run's checkpoint (512 images); for a model without an FEP agent in ``--branch`` it writes
``{"available": false, "reason": ...}``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def probe_records(model, records, root: Path, z: dict, label_maps: dict, meta: dict, branch: str,
                  batch_size: int, seed: int, device) -> dict:
    """Run :func:`fixed_mask_probabilities` over ``records`` (index rows with ``key``, ``path``,
    ``camid``, ``label``) in batches; returns :func:`summarize_probe`'s dict."""
    from ogfr_core.data.images import load_rgb
    from ogfr_core.data.transforms import TestTransform
    from ogfr_core.evaluation.features import map_unseen_cameras
    from ogfr_core.evaluation.fep_probe import MASKS, fixed_mask_probabilities, summarize_probe

    aug = (meta.get("train") or {}).get("augment") or {}
    tf = TestTransform(meta["height"], meta["width"], aug.get("mean", (0.5,) * 3), aug.get("std", (0.5,) * 3))
    gen = torch.Generator().manual_seed(seed)
    acc: dict[str, list] = {}
    model.eval()
    for start in range(0, len(records), batch_size):
        chunk = records.iloc[start: start + batch_size]
        if len(chunk) < 2:  # a BNNeck on batch statistics needs 2 images
            break
        ks = chunk["key"].astype(str).tolist()
        images = torch.stack([tf(load_rgb(root / p)) for p in chunk["path"]]).to(device)  # [b, 3, H, W]
        zz = torch.as_tensor(np.stack([z[k] for k in ks])).long().to(device)  # [b, 4]
        cams = map_unseen_cameras(torch.as_tensor(chunk["camid"].to_numpy().copy()).long(), int(meta["num_cameras"]))
        labels = torch.as_tensor(chunk["label"].to_numpy().copy()).long().to(device)  # [b]
        lm = torch.as_tensor(np.stack([label_maps[k] for k in ks])).long().to(device)  # [b, h, w]
        with torch.no_grad():
            enc = model.encoder(images, zz, cams.to(device))  # [b, L, D]
            out = fixed_mask_probabilities(model, enc, labels, model.patch_foreground(lm), branch, gen)
        for k, v in out.items():
            acc.setdefault(k, []).append(v.double().cpu().numpy())
    cat = {k: np.concatenate(v) for k, v in acc.items()}
    return summarize_probe(cat["p_b"], {m: cat[m] for m in MASKS}, {m: cat[f"erased_{m}"] for m in MASKS},
                           {m: cat[f"change_{m}"] for m in MASKS})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="models/<data.name>/model.pt")
    ap.add_argument("--images", type=int, default=512, help="training images probed (index order)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--branch", default="teacher", choices=["teacher", "student"])
    ap.add_argument("--seed", type=int, default=0, help="seed of the random mask")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="reports/fep_probe.json")
    args = ap.parse_args(argv)

    from ogfr_core.data.index import read_index
    from ogfr_core.io import write_json
    from ogfr_core.parsing import read_parsing
    from ogfr_core.training.checkpoint import load_model
    from ogfr_core.training.run import load_training_labels

    model, meta = load_model(args.checkpoint, args.device)
    name, root = meta["data"]["name"], Path(meta["data"]["root"])
    frame = read_index(Path("data/index") / f"{name}.parquet")
    train = frame[frame["split"] == "train"]
    parse_dir = Path("data/parsing") / name
    status = read_parsing(parse_dir, columns=["key", "status"]).set_index("key")["status"]
    rows = train[train["key"].astype(str).map(status).eq("ok")].head(args.images).reset_index(drop=True)
    if rows.empty:
        sys.exit(f"{parse_dir}: no training image with a parsed person; run `dvc repro parse`")
    label_maps, z, _ = load_training_labels(rows, parse_dir, Path("data/occlusion") / f"{name}.parquet", name)
    command = "python -m benchmarks.probe_fep_reward " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        result = probe_records(model, rows, root, z, label_maps, meta, args.branch, args.batch, args.seed, args.device)
    except ValueError as err:  # a method / ablation without an FEP agent in that branch: nothing to probe
        write_json(args.out, {"available": False, "reason": str(err), "method": meta.get("method"),
                              "checkpoint": str(args.checkpoint), "command": command})
        print(f"fixed-mask probe not available: {err} -> {args.out}")
        return 0
    result.update(available=True, checkpoint=str(args.checkpoint), branch=args.branch, batch=args.batch,
                  seed=args.seed, command=command)
    write_json(args.out, result)
    print(f"{'mask':<11} {'erased':>7} {'p^m':>16} {'reward Eq.8':>20} {'- random':>20} {'feature change':>15}")
    for k, e in result["masks"].items():
        d = e.get("reward_eq8_minus_random")
        vs = f"{d['mean']:+11.5f}±{d['se']:.5f}" if d else f"{'–':>20}"
        print(f"{k:<11} {e['erased_fraction']:7.3f} {e['p_m']['mean']:9.4f}±{e['p_m']['se']:.4f} "
              f"{e['reward_eq8']['mean']:+11.5f}±{e['reward_eq8']['se']:.5f} {vs} "
              f"{100 * e['feature_change']['mean']:8.2f} % ±{100 * e['feature_change']['se']:.2f}")
    print(f"p^b {result['p_b']['mean']:.4f} on {result['images']} images -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
