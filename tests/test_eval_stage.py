"""The evaluate and report stages end to end on a tiny run directory with real images.

Real modules throughout: the data layer reads real crops from ../shared, and the checkpoint is a
real (untrained, 1-block) OGFR model, so this checks the stages' wiring with the model's
``extract`` / ``erasing_mask`` API and the outputs the report needs.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

DATASET = "tiny"
REPO = Path(__file__).resolve().parents[1]


def _tiny_checkpoint(path: Path, data_name: str) -> None:
    """A real (untrained) OGFR checkpoint: vit_tiny truncated to 1 block, 32×16 input."""
    from ogfr_core.config import ModelConfig, TrainConfig, to_dict
    from ogfr_core.model import build_model
    from ogfr_core.training.checkpoint import save_checkpoint

    cfg = ModelConfig(backbone="vit_tiny_patch16_224", depth=1, stride=16, patch_size=16)
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=3, num_cameras=2, img_size=(32, 16), load_weights=False)
    meta = {"model": to_dict(cfg), "data": {"name": data_name}, "train": to_dict(TrainConfig()),
            "num_classes": 3, "num_cameras": 2, "height": 32, "width": 16, "epochs_trained": 1,
            "pretrained_weights": "", "method": "ogfr"}
    save_checkpoint(path, model, None, None, 1, meta)


@pytest.fixture
def run_dir(tmp_path, shared_root, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(name=DATASET, root=str(shared_root), num_workers=0)
    params["evaluate"].update(batch_size=8, retrieval_queries=3, mask_examples=3, device="cpu", extra_datasets=[])
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
    _tiny_checkpoint(tmp_path / f"models/{DATASET}/model.pt", DATASET)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_evaluate_then_report(run_dir):
    from stages import evaluate, report

    evaluate.main(["--params", "params.yaml"])
    metrics = json.loads((run_dir / "reports/metrics.json").read_text())
    entry = metrics["datasets"][DATASET]
    assert set(entry) >= {"visibility", "global", "num_query", "num_gallery"}
    assert entry["num_query"] == 6 and entry["num_gallery"] == 30 and entry["num_parts"] == 8
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
    assert np.asarray(masks["items"][0]["retain"]).shape == (2, 1)  # 32x16 input, 16-px patches

    report.main(["--params", "params.yaml"])
    md = (run_dir / "reports/report.md").read_text()
    for fig in ("figures/cmc.png", "figures/occlusion_types.png",   # no dataset pixels: git
                "crops/erasing_masks.png", "crops/retrievals.png"):   # dataset crops: DVC only
        assert (run_dir / "reports" / fig).is_file() and f"]({fig})" in md
    assert "random init — not a reproduction" in md
    assert "`dvc repro train`" in md  # no dvclive curves in this run directory
    assert "`dvc repro parse`" in md


def test_checkpoint_from_another_dataset_is_rejected(run_dir):
    from stages import evaluate

    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    params["data"]["name"] = "other"
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params))
    (run_dir / "models/other").mkdir()
    _tiny_checkpoint(run_dir / "models/other/model.pt", DATASET)
    with pytest.raises(ValueError, match="trained on 'tiny' but data.name is 'other'"):
        evaluate.main(["--params", "params.yaml"])


def test_report_without_metrics_names_evaluate(run_dir):
    from stages import report

    with pytest.raises(FileNotFoundError, match="dvc repro evaluate"):
        report.main(["--params", "params.yaml"])


def test_validation_extra_set_only_in_a_validation_run(run_dir):
    """An ``extra_datasets`` entry with ``split: val`` (the occluded validation set: held-out training ids)
    is evaluated only with ``val`` in ``evaluate.sets`` *and* a validation split in the index; never
    beside the test sets, and never when the model trained on those ids (no validation split)."""
    from stages import evaluate

    for sub in ("index", "occlusion"):  # a second set: the same images, as an 'occluded validation set'
        shutil.copy(run_dir / f"data/{sub}/{DATASET}.parquet", run_dir / f"data/{sub}/{DATASET}-occ-val.parquet")
    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    params["evaluate"]["extra_datasets"] = [{"name": f"{DATASET}-occ-val", "root": params["data"]["root"],
                                            "layout": "market1501_test", "split": "val"}]
    params["evaluate"].update(oracle_occlusion=False)

    def datasets(sets):
        params["evaluate"]["sets"] = sets
        (run_dir / "params.yaml").write_text(yaml.safe_dump(params))
        evaluate.main(["--params", "params.yaml"])
        return set(json.loads((run_dir / "reports/metrics.json").read_text())["datasets"])

    assert datasets(["test", "val"]) == {DATASET}  # no validation split in the index: the val set is skipped
    index = pd.read_parquet(run_dir / f"data/index/{DATASET}.parquet")
    held = index.pid.isin(sorted(set(index.loc[index.split == "query", "pid"]))[:2])
    index.loc[held, "split"] = index.loc[held, "split"].map({"query": "val_query", "gallery": "val_gallery"})
    index.to_parquet(run_dir / f"data/index/{DATASET}.parquet", index=False)
    assert datasets(["test"]) == {DATASET}
    assert datasets(["val"]) == {f"{DATASET}:val", f"{DATASET}-occ-val:val"}
