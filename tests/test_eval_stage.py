"""The evaluate and report stages end to end on a tiny run directory with real images.

The data layer (``ogfr_core.data``) and the checkpoint loader (``ogfr_core.training.checkpoint``)
belong to other modules; here they are replaced by small stand-ins with the same call signatures
(DESIGN.md contracts), so this test checks the stages' wiring and outputs, not those modules.
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

DATASET = "tiny"
REPO = Path(__file__).resolve().parents[1]


class TinyModel(torch.nn.Module):
    """Colour-layout features: global = 4×2 average pool, 2 parts = top / bottom halves."""

    def extract(self, images, z, camids):
        pooled = torch.nn.functional.adaptive_avg_pool2d(images, (4, 2))  # [B, 3, 4, 2]
        glob = pooled.flatten(1)  # [B, 24]
        parts = torch.stack([pooled[:, :, :2].flatten(1), pooled[:, :, 2:].flatten(1)], 1)  # [B, 2, 12]
        parts = torch.cat([parts, parts], dim=2)  # [B, 2, 24]
        return {"global": glob, "parts": parts, "visibility": torch.stack([z[:, 0] == 0, z[:, 3] == 0], 1)}

    def erasing_mask(self, images, z, camids):
        return torch.sigmoid(torch.nn.functional.adaptive_avg_pool2d(images, (8, 4)).mean(1) * 4)  # [B, 8, 4]


def _fake_modules(monkeypatch, meta):
    from PIL import Image

    def load_rgb(path):
        with Image.open(path) as im:
            return im.convert("RGB")

    class TestTransform:
        def __init__(self, height, width, mean, std):
            self.size, self.mean, self.std = (height, width), torch.tensor(mean), torch.tensor(std)

        def __call__(self, image):
            x = torch.from_numpy(np.asarray(image.resize(self.size[::-1]), np.float32) / 255).permute(2, 0, 1)
            return (x - self.mean[:, None, None]) / self.std[:, None, None]  # [3, H, W]

    class ReIDImageDataset:
        def __init__(self, records, root, transform, label_maps=None, z=None):
            self.records, self.root, self.transform, self.z = records.reset_index(drop=True), Path(root), transform, z

        def __len__(self):
            return len(self.records)

        def __getitem__(self, i):
            r = self.records.iloc[i]
            return {"image": self.transform(load_rgb(self.root / r.path)), "z": torch.tensor(self.z[r.key]),
                    "pid": int(r.pid), "camid": int(r.camid), "key": r.key}

    def build_test_loader(dataset, batch_size, num_workers):
        items = [dataset[i] for i in range(len(dataset))]
        return [{"image": torch.stack([it["image"] for it in items[s:s + batch_size]]),
                 "z": torch.stack([it["z"] for it in items[s:s + batch_size]]),
                 "pid": torch.tensor([it["pid"] for it in items[s:s + batch_size]]),
                 "camid": torch.tensor([it["camid"] for it in items[s:s + batch_size]]),
                 "key": [it["key"] for it in items[s:s + batch_size]]}
                for s in range(0, len(items), batch_size)]

    def load_model(path, device):
        assert Path(path).is_file()
        return TinyModel(), meta

    mods = {
        "ogfr_core.data": {},
        "ogfr_core.data.images": {"load_rgb": load_rgb},
        "ogfr_core.data.transforms": {"TestTransform": TestTransform},
        "ogfr_core.data.dataset": {"ReIDImageDataset": ReIDImageDataset, "build_test_loader": build_test_loader},
        "ogfr_core.data.index": {"read_index": pd.read_parquet},
        "ogfr_core.training": {},
        "ogfr_core.training.checkpoint": {"load_model": load_model},
    }
    for name, attrs in mods.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)


@pytest.fixture
def run_dir(tmp_path, shared_root, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(name=DATASET, root=str(shared_root), num_workers=0)
    params["evaluate"].update(batch_size=8, retrieval_queries=3, mask_examples=3, device="cpu")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    query = sorted((shared_root / "query").glob("*.jpg"))[:6]
    gallery = sorted((shared_root / "bounding_box_test").glob("*.jpg"))[:30]
    rows = [{"key": f"{split[0]}{i:03d}", "path": p.relative_to(shared_root).as_posix(), "pid": int(p.name[:4]),
             "camid": int(p.name.split("_")[1][1]) - 1, "split": split, "label": -1, "width": 64, "height": 128}
            for split, files in (("query", query), ("gallery", gallery)) for i, p in enumerate(files)]
    index = pd.DataFrame(rows)
    (tmp_path / "data/index").mkdir(parents=True)
    (tmp_path / "data/occlusion").mkdir(parents=True)
    index.to_parquet(tmp_path / f"data/index/{DATASET}.parquet", index=False)
    z = np.zeros((len(index), 4), np.int64)
    z[::2, 3] = 1  # every other image has occluded legs
    pd.DataFrame({"key": index.key, "z_head": z[:, 0], "z_arms": z[:, 1], "z_torso": z[:, 2],
                  "z_legs": z[:, 3], "occ_type": z[:, 3]}).to_parquet(
        tmp_path / f"data/occlusion/{DATASET}.parquet", index=False)
    (tmp_path / f"models/{DATASET}").mkdir(parents=True)
    (tmp_path / f"models/{DATASET}/model.pt").write_bytes(b"stand-in")
    meta = {"model": {"backbone": "tiny"}, "data": {"name": DATASET},
            "train": {"augment": {"mean": [0.5] * 3, "std": [0.5] * 3}}, "num_classes": 3, "num_cameras": 1,
            "height": 32, "width": 16, "epochs_trained": 1, "pretrained_weights": "", "method": "ogfr"}
    _fake_modules(monkeypatch, meta)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_evaluate_then_report(run_dir):
    from stages import evaluate, report

    evaluate.main(["--params", "params.yaml"])
    metrics = json.loads((run_dir / "reports/metrics.json").read_text())
    entry = metrics["datasets"][DATASET]
    assert set(entry) >= {"visibility", "global", "num_query", "num_gallery"}
    assert entry["num_query"] == 6 and entry["num_gallery"] == 30 and entry["num_parts"] == 2
    for kind in ("visibility", "global"):
        m = entry[kind]
        assert set(m) >= {"rank-1", "rank-5", "rank-10", "mAP", "mINP", "num_valid_queries",
                          "num_skipped_queries"}
        assert 0 <= m["rank-1"] <= m["rank-5"] <= m["rank-10"] <= 1
        assert m["num_valid_queries"] + m["num_skipped_queries"] == 6
    assert metrics["method"] == "ogfr" and metrics["epochs"] == 1 and metrics["pretrained_weights"] == ""
    cmc = pd.read_csv(run_dir / "reports/plots/cmc.csv")
    assert list(cmc.columns) == ["rank", "visibility", "global"] and len(cmc) == 30  # cut at |gallery|
    assert cmc["visibility"].iloc[0] == pytest.approx(entry["visibility"]["rank-1"], abs=1e-6)
    assert (np.diff(cmc["global"]) >= 0).all() and cmc["global"].iloc[-1] == 1.0
    ret = json.loads((run_dir / "reports/eval/retrievals.json").read_text())
    assert 1 <= len(ret["queries"]) <= 3 and all(q["occluded"] for q in ret["queries"])
    assert all(len(q["top"]) == 5 for q in ret["queries"])
    masks = json.loads((run_dir / "reports/eval/erasing_masks.json").read_text())
    assert masks["available"] and len(masks["items"]) == 3
    assert np.asarray(masks["items"][0]["retain"]).shape == (8, 4)

    report.main(["--params", "params.yaml"])
    md = (run_dir / "reports/report.md").read_text()
    for fig in ("cmc.png", "occlusion_types.png", "erasing_masks.png", "retrievals.png"):
        assert (run_dir / "reports/figures" / fig).is_file() and f"figures/{fig}" in md
    assert "random init — not a reproduction" in md
    assert "`dvc repro train`" in md  # no dvclive curves in this run directory
    assert "`dvc repro parse`" in md


def test_checkpoint_from_another_dataset_is_rejected(run_dir):
    from stages import evaluate

    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    params["data"]["name"] = "other"
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params))
    (run_dir / "models/other").mkdir()
    (run_dir / "models/other/model.pt").write_bytes(b"stand-in")
    with pytest.raises(ValueError, match="trained on 'tiny' but data.name is 'other'"):
        evaluate.main(["--params", "params.yaml"])


def test_report_without_metrics_names_evaluate(run_dir):
    from stages import report

    with pytest.raises(FileNotFoundError, match="dvc repro evaluate"):
        report.main(["--params", "params.yaml"])
