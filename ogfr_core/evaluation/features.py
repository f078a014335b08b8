"""Features, labels and keys that travel together (:class:`FeatureSet`), and their extraction.

Evaluation never cares how features were produced (fast-reid's evaluator interface in spirit): the
model only has to offer the student-branch inference API of DESIGN.md::

    model.extract(images [B,3,H,W], z [B,4] long, camids [B] long)
        -> {"global": [B,D], "parts": [B,K,D], "visibility": [B,K] bool}

where ``visibility`` is Eq. (22) (part i visible iff it wins the per-pixel arg-max of the upsampled
correlation map somewhere; see ``ogfr_core.model.fep.part_visibility``)
and K = 0 for the baseline.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..io import atomic_path

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """Features of N images with their labels, in one object (never "the first N rows are queries").

    Attributes:
        global_feats: ``[N, D]`` float32 global features f^g.
        part_feats: ``[N, K, D]`` float32 part features f^1..f^K (K may be 0).
        visibility: ``[N, K]`` bool part visibility v_i (Eq. 22).
        pids: ``[N]`` int64 person ids.
        camids: ``[N]`` int64 camera ids (0-based), as in the index — not remapped.
        keys: N image keys (SHA-1 of the file bytes, DESIGN.md).
        paths: N image paths relative to the dataset root (optional, ``[]`` when unknown).

    Raises:
        ValueError: on construction, when the arrays disagree on N, K or D, or have the wrong rank
            (the message names the field and both sizes).
    """

    global_feats: np.ndarray
    part_feats: np.ndarray
    visibility: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    keys: list[str]
    paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.global_feats = np.asarray(self.global_feats, dtype=np.float32)
        self.part_feats = np.asarray(self.part_feats, dtype=np.float32)
        self.visibility = np.asarray(self.visibility).astype(bool, copy=False)
        self.pids = np.asarray(self.pids).astype(np.int64, copy=False).reshape(-1)
        self.camids = np.asarray(self.camids).astype(np.int64, copy=False).reshape(-1)
        self.keys = [str(k) for k in self.keys]
        self.paths = [str(p) for p in self.paths]
        if self.global_feats.ndim != 2:
            raise ValueError(f"FeatureSet.global_feats must be [N, D], got shape {self.global_feats.shape}")
        n, d = self.global_feats.shape
        if self.part_feats.size == 0 and self.part_feats.ndim != 3:
            self.part_feats = np.zeros((n, 0, d), np.float32)
        if self.visibility.size == 0 and self.visibility.ndim != 2:
            self.visibility = np.zeros((n, 0), bool)
        if self.part_feats.ndim != 3:
            raise ValueError(f"FeatureSet.part_feats must be [N, K, D], got shape {self.part_feats.shape}")
        k = self.part_feats.shape[1]
        sizes = {"part_feats": self.part_feats.shape[0], "visibility": self.visibility.shape[0],
                 "pids": len(self.pids), "camids": len(self.camids), "keys": len(self.keys)}
        if self.paths:
            sizes["paths"] = len(self.paths)
        bad = {name: m for name, m in sizes.items() if m != n}
        if bad:
            raise ValueError(f"FeatureSet: global_feats has {n} rows but " +
                             ", ".join(f"{name} has {m}" for name, m in bad.items()) +
                             " (features, pids, camids and keys must describe the same images)")
        if self.part_feats.shape[2] != d and k > 0:
            raise ValueError(f"FeatureSet: part feature dim {self.part_feats.shape[2]} != global dim {d}")
        if self.visibility.shape != (n, k):
            raise ValueError(f"FeatureSet.visibility has shape {self.visibility.shape}, expected {(n, k)}")

    def __len__(self) -> int:
        return len(self.pids)

    @property
    def num_parts(self) -> int:
        """K, the number of part features (0 for the baseline)."""
        return self.part_feats.shape[1]

    @property
    def dim(self) -> int:
        """D, the feature dimension."""
        return self.global_feats.shape[1]

    def subset(self, index) -> "FeatureSet":
        """Rows ``index`` (int array, slice or bool mask) as a new FeatureSet."""
        idx = np.arange(len(self))[index]
        return FeatureSet(self.global_feats[idx], self.part_feats[idx], self.visibility[idx],
                          self.pids[idx], self.camids[idx], [self.keys[i] for i in idx],
                          [self.paths[i] for i in idx] if self.paths else [])

    @staticmethod
    def concat(sets: Sequence["FeatureSet"]) -> "FeatureSet":
        """Concatenate feature sets row-wise (e.g. query + gallery for re-ranking).

        Raises:
            ValueError: empty list, or sets with different D or K.
        """
        if not sets:
            raise ValueError("FeatureSet.concat needs at least one set")
        dims = {(s.dim, s.num_parts) for s in sets}
        if len(dims) != 1:
            raise ValueError(f"FeatureSet.concat: sets disagree on (D, K): {sorted(dims)}")
        with_paths = all(s.paths for s in sets)
        return FeatureSet(
            np.concatenate([s.global_feats for s in sets]),
            np.concatenate([s.part_feats for s in sets]),
            np.concatenate([s.visibility for s in sets]),
            np.concatenate([s.pids for s in sets]),
            np.concatenate([s.camids for s in sets]),
            [k for s in sets for k in s.keys],
            [p for s in sets for p in s.paths] if with_paths else [],
        )

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` file atomically (no pickles: keys/paths are unicode arrays)."""
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, global_feats=self.global_feats, part_feats=self.part_feats,
                     visibility=self.visibility, pids=self.pids, camids=self.camids,
                     keys=np.asarray(self.keys, dtype=str), paths=np.asarray(self.paths, dtype=str))

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSet":
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: ``path`` does not exist (names the stage that writes it).
            ValueError: a field is missing or the arrays disagree (see the class doc).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: feature file not found (written by `dvc repro evaluate`)")
        with np.load(path, allow_pickle=False) as z:
            missing = {"global_feats", "part_feats", "visibility", "pids", "camids", "keys"} - set(z.files)
            if missing:
                raise ValueError(f"{path}: not a FeatureSet file, missing {sorted(missing)}")
            return cls(z["global_feats"], z["part_feats"], z["visibility"], z["pids"], z["camids"],
                       z["keys"].tolist(), z["paths"].tolist() if "paths" in z.files else [])


def map_unseen_cameras(camids, num_cameras: int):
    """Camera ids handed to the model's camera embedding: ids the model was not trained on → 0.

    Cross-dataset evaluation (e.g. Market-1501 → Occluded-REID) meets cameras the side-information
    embedding of Eq. (5) never saw; they use embedding 0, as TransReID does for a single-camera set.
    The protocol still uses the *true* camids. ``num_cameras <= 0`` disables the mapping.

    Args:
        camids: ``[B]`` long tensor or array.
        num_cameras: cameras in the training set (checkpoint meta ``num_cameras``).
    """
    if num_cameras <= 0:
        return camids
    unseen = int((np.asarray(camids) >= num_cameras).sum())
    if unseen:
        log.info("%d image(s) from cameras unseen in training use camera embedding 0", unseen)
    return camids.where(camids < num_cameras, camids.new_zeros(())) if hasattr(camids, "where") \
        else np.where(np.asarray(camids) < num_cameras, camids, 0)


_REQUIRED_OUT = ("global", "parts", "visibility")
_REQUIRED_BATCH = ("image", "z", "camid", "pid", "key")


def extract_features(model, loader: Iterable[dict], device, num_cameras: int = 0,
                     progress: bool = False) -> FeatureSet:
    """Run ``model.extract`` over ``loader`` (student branch, eval mode, no grad) into a FeatureSet.

    Args:
        model: a module with ``extract(images [B,3,H,W] float, z [B,4] long, camids [B] long)``
            returning ``{"global": [B,D], "parts": [B,K,D], "visibility": [B,K] bool}``.
        loader: iterable of dict batches with ``image`` ``[B,3,H,W]``, ``z`` ``[B,4]``, ``camid``
            ``[B]``, ``pid`` ``[B]``, ``key`` (B strings) and optionally ``path`` (B strings), as
            ``ogfr_core.data.dataset.ReIDImageDataset`` + the default collate produce.
        device: torch device for the forward pass.
        num_cameras: training cameras; unseen camids go to camera embedding 0
            (:func:`map_unseen_cameras`); 0 disables the mapping.
        progress: show a tqdm bar.

    Raises:
        KeyError: a batch or the model output misses a required field (the message lists them).
        ValueError: the loader yields no batch, or output shapes disagree with the batch size.
    """
    import torch

    was_training = model.training
    model.eval()
    glob, parts, vis, pids, camids, keys, paths = [], [], [], [], [], [], []
    it = loader
    if progress:
        from tqdm import tqdm
        it = tqdm(loader, desc="features", unit="batch")
    try:
        with torch.inference_mode():
            for batch in it:
                missing = [k for k in _REQUIRED_BATCH if k not in batch]
                if missing:
                    raise KeyError(f"loader batch misses {missing}; expected keys {list(_REQUIRED_BATCH)}")
                images = batch["image"].to(device, non_blocking=True)  # [B, 3, H, W]
                z = torch.as_tensor(batch["z"]).long().to(device)  # [B, 4]
                cam = torch.as_tensor(batch["camid"]).long()  # [B], true camids
                out = model.extract(images, z, map_unseen_cameras(cam, num_cameras).to(device))
                miss = [k for k in _REQUIRED_OUT if k not in out]
                if miss:
                    raise KeyError(f"model.extract output misses {miss}; expected {list(_REQUIRED_OUT)}")
                b = images.shape[0]
                g, p, v = out["global"], out["parts"], out["visibility"]
                if g.shape[0] != b or p.shape[0] != b or v.shape[0] != b or p.shape[:2] != v.shape:
                    raise ValueError(f"model.extract shapes global {tuple(g.shape)}, parts "
                                     f"{tuple(p.shape)}, visibility {tuple(v.shape)} do not fit batch {b}")
                glob.append(g.float().cpu().numpy())
                parts.append(p.float().cpu().numpy())
                vis.append(v.bool().cpu().numpy())
                pids.append(torch.as_tensor(batch["pid"]).cpu().numpy())
                camids.append(cam.cpu().numpy())
                keys.extend(batch["key"])
                if "path" in batch:
                    paths.extend(batch["path"])
    finally:
        model.train(was_training)
    if not glob:
        raise ValueError("extract_features: the loader yielded no batch (empty split?)")
    return FeatureSet(np.concatenate(glob), np.concatenate(parts), np.concatenate(vis),
                      np.concatenate(pids), np.concatenate(camids), keys,
                      paths if len(paths) == len(keys) else [])
