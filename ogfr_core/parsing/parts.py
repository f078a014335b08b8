"""Keypoints → 9-class part label map, by drawing limb segments and body polygons.

Shared by the keypoint backends (``mediapipe``, ``torchvision``). Each part is drawn only from
keypoints whose confidence is ≥ ``min_visibility``: an occluded keypoint produces no pixels for the
segments it ends, which is how occlusion reaches the label map (and Eq. 1–2). Parts are painted in
the order torso → legs → feet → arms → head (later parts overwrite earlier ones where they overlap,
arms being usually in front of the torso), then optionally gated by a person mask.

Part geometry (``w`` = ``limb_width`` pixels):
    head   ellipse around the visible face points (nose, eyes, ears), radius from the face spread,
           the shoulder width or ``0.75 w``, whichever is largest; shifted up (skull above face).
    arms   shoulder→elbow→wrist segments, ``0.7 w`` thick.
    torso  polygon over the visible corners of shoulder/hip quadrilateral (≥ 3), widened by ``w/2``
           along its visible edges; two adjacent corners alone give a thick edge.
    legs   hip→knee→ankle segments, ``w`` thick.
    feet   ankle/heel/foot-tip triangle (BlazePose) or, without heel/tip points (COCO backends), a
           short segment continuing knee→ankle by 25 % of the shin; ``0.6 w`` thick.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
from PIL import Image, ImageDraw

from .. import PART_NAMES
from .keypoints import BODY

PART_ID = {name: i for i, name in enumerate(PART_NAMES)}
FACE_POINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
# min_visibility that draws every predicted keypoint: the amodal part map (ParseResult.amodal_map)
AMODAL_VISIBILITY = float("-inf")


class _Canvas:
    """A uint8 PIL canvas that draws thick round-capped segments and polygons with part ids."""

    def __init__(self, hw: tuple[int, int]):
        self.img = Image.new("L", (hw[1], hw[0]), 0)
        self.draw = ImageDraw.Draw(self.img)

    def segment(self, p: np.ndarray, q: np.ndarray, width: float, part: int) -> None:
        r = max(width / 2.0, 0.5)
        self.draw.line([tuple(p), tuple(q)], fill=part, width=max(int(round(width)), 1))
        for c in (p, q):
            self.draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=part)

    def polygon(self, pts: np.ndarray, part: int) -> None:
        self.draw.polygon([tuple(p) for p in pts], fill=part)

    def ellipse(self, centre: np.ndarray, rx: float, ry: float, part: int) -> None:
        self.draw.ellipse([centre[0] - rx, centre[1] - ry, centre[0] + rx, centre[1] + ry], fill=part)

    def array(self) -> np.ndarray:
        return np.asarray(self.img, dtype=np.uint8).copy()


def draw_parts(points: np.ndarray, label_hw: tuple[int, int], limb_width: float,
               min_visibility: float, person_mask: np.ndarray | None = None) -> np.ndarray:
    """Draw the 8 body parts from BODY-21 keypoints.

    Args:
        points: float ``[21, 3]`` BODY-21 ``(x, y, confidence)`` in label-map pixels
            (:data:`ogfr_core.parsing.keypoints.BODY21_NAMES`); points may lie outside the map.
        label_hw: ``(label_h, label_w)`` of the output, pixels.
        limb_width: leg thickness in pixels (arms/feet are thinner, see the module doc).
        min_visibility: a keypoint with confidence below this produces no part pixels.
        person_mask: optional bool ``[label_h, label_w]``; pixels outside it are set to background.

    Returns:
        uint8 ``[label_h, label_w]`` label map with ids 0..8 (``ogfr_core.PART_NAMES``).

    Example::

        >>> pts = np.zeros((21, 3), np.float32)
        >>> draw_parts(pts, (256, 128), 20, 0.5).max()   # nothing visible → all background
        0
    """
    points = np.asarray(points, dtype=np.float32)
    if points.shape != (len(BODY), 3):
        raise ValueError(f"points must be BODY-21 [21, 3], got {points.shape}")
    vis = points[:, 2] >= min_visibility  # [21]
    xy = points[:, :2]  # [21, 2]
    canvas = _Canvas(label_hw)

    def ok(*names: str) -> bool:
        return all(vis[BODY[n]] for n in names)

    def pt(name: str) -> np.ndarray:
        return xy[BODY[name]]

    def limb(names: tuple[str, ...], width: float, part: str) -> None:
        for a, b in zip(names[:-1], names[1:]):
            if ok(a, b):
                canvas.segment(pt(a), pt(b), width, PART_ID[part])

    # torso: quadrilateral over the visible shoulder/hip corners (ring order), widened by w/2.
    ring = ("left_shoulder", "right_shoulder", "right_hip", "left_hip")
    visible_ring = [n for n in ring if ok(n)]
    if len(visible_ring) >= 3:
        canvas.polygon(np.stack([pt(n) for n in visible_ring]), PART_ID["torso"])
    for a, b in zip(ring, ring[1:] + ring[:1]):
        if ok(a, b):
            canvas.segment(pt(a), pt(b), limb_width, PART_ID["torso"])

    for side in ("left", "right"):
        limb((f"{side}_hip", f"{side}_knee", f"{side}_ankle"), limb_width, f"{side}_leg")
    foot_w = 0.6 * limb_width
    for side in ("left", "right"):
        ankle, heel, tip, knee = (f"{side}_ankle", f"{side}_heel", f"{side}_foot_index", f"{side}_knee")
        part = PART_ID[f"{side}_foot"]
        has_foot_points = points[BODY[heel], 2] > 0 or points[BODY[tip], 2] > 0
        if has_foot_points:
            if ok(ankle, heel, tip):
                canvas.polygon(np.stack([pt(ankle), pt(heel), pt(tip)]), part)
            limb((ankle, heel, tip), foot_w, f"{side}_foot")
            limb((ankle, tip), foot_w, f"{side}_foot")
        elif ok(knee, ankle):  # COCO-only backends: continue the shin by 25 %.
            canvas.segment(pt(ankle), pt(ankle) + 0.25 * (pt(ankle) - pt(knee)), foot_w, part)
    for side in ("left", "right"):
        limb((f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist"), 0.7 * limb_width, f"{side}_arm")

    face = [pt(n) for n in FACE_POINTS if ok(n)]
    if face:
        face_xy = np.stack(face)  # [F, 2]
        spread = max((float(np.linalg.norm(p - q)) for p, q in combinations(face_xy, 2)), default=0.0)
        r = max(0.75 * limb_width, 0.6 * spread)
        if ok("left_shoulder", "right_shoulder"):
            r = max(r, 0.3 * float(np.linalg.norm(pt("left_shoulder") - pt("right_shoulder"))))
        centre = face_xy.mean(0) - np.array([0.0, 0.25 * r], np.float32)
        canvas.ellipse(centre, r, 1.25 * r, PART_ID["head"])

    label = canvas.array()
    if person_mask is not None:
        if person_mask.shape != tuple(label_hw):
            raise ValueError(f"person_mask shape {person_mask.shape} != label size {tuple(label_hw)}")
        label[~person_mask.astype(bool)] = 0
    return label
