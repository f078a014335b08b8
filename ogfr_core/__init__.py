"""ogfr_core — the shared package of the OGFR occluded person re-identification pipeline.

Modules (one concept each): ``config`` (typed params), ``io`` (atomic writes), ``data`` (readers,
index, PK sampler, transforms), ``parsing`` (part parsers and their parquet cache), ``occlusion``
(Eq. 1–2), ``model`` (OA-ViT, FEP, student), ``losses`` (Eq. 15–21, policy gradient), ``training``,
``evaluation`` (Eq. 22–23, CMC/mAP/mINP), ``report``.
"""

__version__ = "0.1.0"

# Part ids of the 9-class label map (contract shared by every stage).
PART_NAMES = (
    "background", "head", "left_arm", "right_arm", "torso",
    "left_leg", "right_leg", "left_foot", "right_foot",
)
# Coarse parts (C = 4) of Eq. (1): fine part ids merged into each.
COARSE_PARTS = {
    "head": (1,),
    "arms": (2, 3),
    "torso": (4,),
    "legs": (5, 6, 7, 8),
}
