"""Dataset layer: readers for the standard re-ID layouts, the image index, PK sampler, transforms,
the image dataset and its loaders.

Public API (stable; other modules code against it)::

    load_rgb(path) -> PIL.Image (RGB)                   ImageReadError(path, reason)
    READERS[layout](root, query_camid=0, gallery_camid=1) -> DatasetListing
    dataset_root(cfg, repo_root) -> Path                build_index(cfg, repo_root) -> IndexResult
    read_index(path) -> DataFrame                       write_index(frame, path)
    summarize_index(frame) -> dict                      PKSampler(labels, p, k, seed)
    TrainTransform(height, width, aug)                  TestTransform(height, width, mean, std)
    ReIDImageDataset(records, root, transform, label_maps=None, z=None)
    build_train_loader(dataset, labels, p, k, seed, num_workers)
    build_test_loader(dataset, batch_size, num_workers)
"""
from .dataset import MissingLabelsError, ReIDImageDataset, build_test_loader, build_train_loader, collate
from .images import ImageInfo, ImageReadError, load_rgb, read_image_info, to_rgb
from .index import (
    INDEX_COLUMNS, IndexFileError, IndexResult, build_index, dataset_root, read_index, relabel,
    subset_records, summarize_index, write_index,
)
from .readers import READERS, SPLITS, DatasetLayoutError, DatasetListing, ImageRecord
from .sampler import PKSampler
from .transforms import LR_SWAP, TestTransform, TrainTransform

__all__ = [
    "MissingLabelsError", "ReIDImageDataset", "build_test_loader", "build_train_loader", "collate",
    "ImageInfo", "ImageReadError", "load_rgb", "read_image_info", "to_rgb",
    "INDEX_COLUMNS", "IndexFileError", "IndexResult", "build_index", "dataset_root", "read_index",
    "relabel", "subset_records", "summarize_index", "write_index",
    "READERS", "SPLITS", "DatasetLayoutError", "DatasetListing", "ImageRecord",
    "PKSampler", "LR_SWAP", "TestTransform", "TrainTransform",
]
