"""Using a trained checkpoint: ``ogfr search`` (rank a gallery folder for query images) and
``ogfr export`` (the inference branch as ONNX / TorchScript, checked against PyTorch).

Both work through ``model.extract`` (DESIGN.md), so every method the checkpoint loader can build is
supported. The command line is :mod:`ogfr_core.cli`.
"""
from .common import InferenceInputError, load_inference_model
from .export import ExportError, ExportResult, InferenceBranch, export_model
from .search import SearchOptions, ZSource, search, search_figure

__all__ = ["ExportError", "ExportResult", "InferenceBranch", "InferenceInputError", "SearchOptions", "ZSource",
           "export_model", "load_inference_model", "search", "search_figure"]
