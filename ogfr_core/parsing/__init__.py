"""Human parsing (OGFR §III-A1): part-parser backends, keypoints/fields → 9-class label maps, and
the parquet cache the ``parse`` stage writes and the train/report stages read.

Public API::

    build_parser(cfg) -> PartParser            # registry: BACKENDS = {"mediapipe", "pifpaf_maskrcnn", "torchvision"}
    PartParser.parse(image_rgb uint8 [H, W, 3]) -> ParseResult(label_map uint8 [h, w], keypoints [17, 3], person_found)
    parse_dataset(index, root, cfg, out_dir) -> ParseSummary
    read_parsing(parse_dir) -> pd.DataFrame    # one row per image key
    load_label_maps(parse_dir, keys=None) -> {key: uint8 [h, w]}
"""
from .base import BackendUnavailableError, ParseResult, PartParser
from .cache import decode_label_map, load_label_maps, read_parsing
from .driver import ParseSummary, parse_dataset
from .registry import BACKENDS, build_parser

__all__ = [
    "BACKENDS", "BackendUnavailableError", "ParseResult", "ParseSummary", "PartParser", "build_parser",
    "decode_label_map", "load_label_maps", "parse_dataset", "read_parsing",
]
