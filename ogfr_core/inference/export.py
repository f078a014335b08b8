"""``ogfr export``: the inference branch of a checkpoint (the student, or the baseline's single
branch) as ONNX or TorchScript, checked against PyTorch on real crops before it is written.

The exported module is :class:`InferenceBranch`, a thin wrapper around ``model.extract`` (so any
method whose model has the DESIGN.md inference API exports the same way)::

    inputs   images   float32 [B, 3, H, W]  resized to the checkpoint's H×W, (x/255 − mean)/std
             z        int64   [B, 4]        occlusion labels (head, arms, torso, legs), 1 = occluded (Eq. 2)
             camids   int64   [B]           0-based camera ids; ids ≥ the training cameras use 0
    outputs  global      float32 [B, D]     global feature after the BNNeck
             parts       float32 [B, K, D]  part features (K = 0 for the baseline)
             visibility  bool    [B, K]     Eq. (22) part visibility

B is a dynamic axis. The features feed Eq. (23) (``ogfr_core.evaluation.compute_distance``);
H, W, mean and std are stored in the file (ONNX ``metadata_props``, TorchScript extra file
``ogfr.json``).

How (both are tracing exporters, so Python-level input checks of the model — z ∈ {0, 1}, camera id
range — are evaluated once while tracing and are not part of the exported graph):

* ONNX: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter (deprecated in
  torch 2.9+, still shipped). The torch.export-based default cannot export this model: the model's
  data-dependent input checks (``int(z.min())``) stop ``torch.export`` (GuardOnDataDependentSymNode,
  measured with torch 2.14). Checked with onnxruntime (CPU).
* TorchScript: ``torch.jit.trace`` then ``torch.jit.freeze`` (deprecated in torch 2.14 too);
  freezing inlines the parameters the traced graph uses and drops the rest (teacher branch,
  classifiers, reward-baseline copies), as the ONNX file holds only the inference branch. Checked by
  running the saved file through ``torch.jit.load``.

The check runs the saved file on real crops with a batch size other than the one traced (so the
dynamic batch axis is exercised) and compares with ``model.extract``: max |Δ| of the features must
be ≤ ``tolerance`` (default 1e-4) and the visibility must be equal; otherwise nothing is written.
"""
from __future__ import annotations

import json
import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..io import atomic_path
from .common import InferenceInputError, eval_transform, file_sha1, image_key, list_images

log = logging.getLogger(__name__)

INPUT_NAMES = ("images", "z", "camids")
OUTPUT_NAMES = ("global", "parts", "visibility")
FORMATS = ("onnx", "torchscript")
TRACE_BATCH = 2


class ExportError(UserError, RuntimeError):
    """The export cannot run (missing onnx/onnxruntime) or does not match PyTorch on the check."""


class InferenceBranch(nn.Module):
    """``forward(images, z, camids) -> (global, parts, visibility)``: ``model.extract`` as plain
    tensors (module doc for shapes), with unseen camera ids mapped to 0 inside the graph as
    :func:`ogfr_core.evaluation.map_unseen_cameras` does in evaluation.

    Args:
        model: any module with the DESIGN.md ``extract(images, z, camids)``.
        num_cameras: training cameras (checkpoint meta); 0 = no mapping.
    """

    def __init__(self, model: nn.Module, num_cameras: int) -> None:
        super().__init__()
        self.model = model
        self.num_cameras = int(num_cameras)

    def forward(self, images: torch.Tensor, z: torch.Tensor, camids: torch.Tensor):
        if self.num_cameras > 0:
            camids = torch.where(camids < self.num_cameras, camids, torch.zeros_like(camids))  # [B]
        out = self.model.extract(images, z, camids)
        # a zero-weight use of every input: the ONNX exporter drops inputs the graph does not read
        # (z for the baseline, camids without a camera embedding); the signature stays the same
        anchor = (z.sum() + camids.sum()).to(out["global"].dtype) * 0  # [] exactly 0
        return out["global"] + anchor, out["parts"], out["visibility"]


@dataclass(frozen=True)
class ParityRow:
    """One output compared: ``name``, ``shape``, ``max_abs_diff`` (features) or ``mismatches``
    (visibility), ``ok``."""

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    mismatches: int
    ok: bool


def compare_outputs(reference: Sequence[torch.Tensor], exported: Sequence[Any], tolerance: float) -> list[ParityRow]:
    """PyTorch vs exported outputs, in :data:`OUTPUT_NAMES` order: float outputs by max |Δ| ≤
    ``tolerance``, the bool visibility by exact equality (shapes must match)."""
    rows = []
    for name, ref, got in zip(OUTPUT_NAMES, reference, exported):
        ref = ref.detach().cpu().numpy()
        got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
        if ref.shape != got.shape:
            rows.append(ParityRow(name, tuple(got.shape), float("inf"), -1, False))
            continue
        if ref.dtype == np.bool_:
            bad = int((ref != got.astype(bool)).sum())
            rows.append(ParityRow(name, tuple(ref.shape), 0.0, bad, bad == 0))
        else:
            diff = float(np.abs(ref.astype(np.float64) - got.astype(np.float64)).max()) if ref.size else 0.0
            rows.append(ParityRow(name, tuple(ref.shape), diff, 0, diff <= tolerance))
    return rows


def crops_batch(paths: Sequence[Path], meta: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real crops as model inputs: images ``[N,3,H,W]`` (checkpoint transform), z ``[N,4]`` cycling
    through the 16 occlusion types (3·i mod 16: every coarse part occluded somewhere), camids
    ``[N]`` cycling through the training cameras (``i mod num_cameras``)."""
    from ..data.images import load_rgb
    from ..occlusion import type_to_z

    tf = eval_transform(meta)
    images = torch.stack([tf(load_rgb(p)) for p in paths])  # [N, 3, H, W]
    z = torch.tensor([type_to_z((3 * i) % 16) for i in range(len(paths))], dtype=torch.long)  # [N, 4]
    cams = max(1, int(meta["num_cameras"]))
    camids = torch.arange(len(paths), dtype=torch.long) % cams  # [N]
    return images, z, camids


def verification_crops(sources: Sequence[str | Path], n: int = 8) -> list[Path]:
    """Up to ``n`` readable image files from ``sources`` (files, or folders searched recursively).

    Raises:
        InferenceInputError: fewer than :data:`TRACE_BATCH` + 1 readable crops (the check needs a
            batch size other than the traced one).
    """
    found: list[Path] = []
    for src in map(Path, sources):
        for f in (list_images(src) if src.is_dir() else [src]):
            if len(found) >= n:
                break
            try:
                image_key(f, "verification crop")
                found.append(f)
            except InferenceInputError as exc:
                log.warning("%s (skipped)", exc)
    if len(found) <= TRACE_BATCH:
        raise InferenceInputError(f"--verify-images {[str(s) for s in sources]}: found {len(found)} readable "
                                  f"crop(s), need at least {TRACE_BATCH + 1} real crops to check the export")
    return found


def export_metadata(meta: dict, model_sha1: str, num_parts: int, dim: int) -> dict[str, str]:
    """What a consumer of the exported file needs (module doc), as strings."""
    aug = (meta.get("train") or {}).get("augment") or {}
    return {
        "ogfr.inputs": "images float32 [B,3,H,W] = (x/255 - mean)/std; z int64 [B,4] (head, arms, torso, legs; "
                       "1 = occluded); camids int64 [B] (0-based)",
        "ogfr.outputs": f"global float32 [B,{dim}]; parts float32 [B,{num_parts},{dim}]; visibility bool "
                        f"[B,{num_parts}] (Eq. 22); rank with Eq. 23 on L2-normalised features",
        "ogfr.height": str(int(meta["height"])), "ogfr.width": str(int(meta["width"])),
        "ogfr.mean": json.dumps(list(aug.get("mean", (0.5,) * 3))),
        "ogfr.std": json.dumps(list(aug.get("std", (0.5,) * 3))),
        "ogfr.method": str(meta.get("method", "")), "ogfr.num_cameras": str(int(meta["num_cameras"])),
        "ogfr.checkpoint_sha1": model_sha1,
    }


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Tracing warnings we know and explain in the module doc (input checks frozen at trace time,
    the deprecated exporters), silenced so that the check's printout stays readable."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*The feature will be removed.*")
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator.*")
        yield


def _write_onnx(branch: InferenceBranch, example: tuple, path: Path, metadata: dict[str, str], opset: int) -> None:
    try:
        import onnx
    except ImportError as exc:
        raise ExportError("ONNX export needs the onnx and onnxruntime packages: "
                          "pip install 'ogfr-pipeline[export]'") from exc
    with _quiet_tracing():
        torch.onnx.export(branch, example, str(path), dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                          dynamic_axes={n: {0: "batch"} for n in (*INPUT_NAMES, *OUTPUT_NAMES)},
                          do_constant_folding=True)
    proto = onnx.load(str(path))
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _run_onnx(path: Path, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError("checking the ONNX export needs onnxruntime: pip install 'ogfr-pipeline[export]'") from exc
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(list(OUTPUT_NAMES), {n: t.cpu().numpy() for n, t in zip(INPUT_NAMES, inputs)})


def _write_torchscript(branch: InferenceBranch, example: tuple, path: Path, metadata: dict[str, str]) -> None:
    with _quiet_tracing():
        frozen = torch.jit.freeze(torch.jit.trace(branch, example, check_trace=False))
        torch.jit.save(frozen, str(path), _extra_files={"ogfr.json": json.dumps(metadata, sort_keys=True)})


def _run_torchscript(path: Path, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    with _quiet_tracing():
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return list(loaded(*inputs))


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and measured: ``path``, ``format``, ``bytes``, ``crops`` (the
    real images of the check), ``checks`` = ``[(batch size, [ParityRow])]``, ``runtime`` (what ran the
    export), ``tolerance``."""

    path: Path
    format: str
    bytes: int
    crops: list[Path]
    checks: list[tuple[int, list[ParityRow]]]
    runtime: str
    tolerance: float

    def lines(self) -> list[str]:
        """The check as printed by ``ogfr export``."""
        out = [f"export check: {self.runtime} vs PyTorch model.extract on {len(self.crops)} real crops "
               f"(first: {self.crops[0]}), traced with batch {TRACE_BATCH}"]
        for batch, rows in self.checks:
            for r in rows:
                what = (f"equal ({int(np.prod(r.shape))} values)" if r.mismatches == 0 else f"{r.mismatches} differ") \
                    if r.name == "visibility" else f"max |Δ| {r.max_abs_diff:.2e} (tolerance {self.tolerance:g})"
                out.append(f"  batch {batch:>2}  {r.name:<10} {str(list(r.shape)):<14} {what:<40} "
                           f"{'ok' if r.ok else 'FAILED'}")
        return out


def export_model(model_path: str | Path, fmt: str, out: str | Path, verify_sources: Sequence[str | Path],
                 tolerance: float = 1e-4, opset: int = 17, num_crops: int = 8) -> ExportResult:
    """Export the inference branch of ``model_path`` to ``out`` (module doc), written only if the
    check passes.

    Args:
        fmt: ``onnx`` or ``torchscript``.
        verify_sources: image files or folders with real crops (e.g. the dataset's ``query/``).
        tolerance: max |Δ| allowed on the features.
        opset: ONNX opset.
        num_crops: crops in the check (the first :data:`TRACE_BATCH` are the tracing example).

    Raises:
        CheckpointError: unusable checkpoint. InferenceInputError: bad format or too few crops.
        ExportError: onnx/onnxruntime missing, or the export disagrees with PyTorch (the check is in
            the message; nothing is written).
    """
    from .common import load_inference_model

    if fmt not in FORMATS:
        raise InferenceInputError(f"--format {fmt!r}: expected one of {list(FORMATS)}")
    crops = verification_crops(verify_sources, num_crops)
    model, meta = load_inference_model(model_path, "cpu")
    branch = InferenceBranch(model, int(meta["num_cameras"])).eval()
    inputs = crops_batch(crops, meta)
    example = tuple(t[:TRACE_BATCH] for t in inputs)
    batches = [len(crops), 1]
    with torch.inference_mode():
        references = {b: branch(*(t[:b] for t in inputs)) for b in batches}
    g, p, _ = references[len(crops)]
    metadata = export_metadata(meta, file_sha1(model_path), p.shape[1], g.shape[1])

    with atomic_path(out) as tmp:
        if fmt == "onnx":
            _write_onnx(branch, example, tmp, metadata, opset)
            import onnxruntime

            runtime = f"onnxruntime {onnxruntime.__version__} (CPU)"
            run = _run_onnx
        else:
            _write_torchscript(branch, example, tmp, metadata)
            runtime = f"torch.jit.load (torch {torch.__version__})"
            run = _run_torchscript
        checks = [(b, compare_outputs(references[b], run(tmp, tuple(t[:b] for t in inputs)), tolerance))
                  for b in batches]
        result = ExportResult(Path(out), fmt, tmp.stat().st_size, crops, checks, runtime, tolerance)
        if not all(r.ok for _, rows in checks for r in rows):
            raise ExportError(f"the {fmt} export does not match PyTorch, not written: " +
                              " | ".join(line.strip() for line in result.lines()[1:]))
    return result
