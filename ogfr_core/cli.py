"""The ``ogfr`` command (``[project.scripts]`` in pyproject.toml): use a trained checkpoint.

::

    ogfr search --model models/<dataset>/model.pt --query IMG [IMG ...] --gallery DIR
                [--top-k 10] [--out results.json] [--figure results.png] [--assume-holistic]
    ogfr export --model models/<dataset>/model.pt --format onnx|torchscript --out student.onnx
                [--verify-images DIR|IMG ...]

Results go to stdout, progress and log lines to stderr. A user-facing error
(:func:`ogfr_core.runtime.user_error_types`: a :class:`~ogfr_core.errors.UserError`, which
:class:`~ogfr_core.inference.InferenceInputError` and :class:`~ogfr_core.inference.ExportError` are
too, or a ``FileNotFoundError``) is one ``ERROR`` line and exit status 1; anything else is a bug and
keeps its traceback. Also runnable as ``python -m ogfr_core.cli``.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

log = logging.getLogger("ogfr_core.cli")


def _params(path: str, required: bool) -> dict:
    from .config import read_params
    from .inference import InferenceInputError

    if not Path(path).is_file():
        if required:
            raise InferenceInputError(
                f"--params {path}: not found; pass the params.yaml the model was trained with (its parse and "
                "occlusion sections give the query's z), or --assume-holistic to skip parsing")
        return {}
    return read_params(path)


def _search(args: argparse.Namespace) -> int:
    from .config import OccluderConfig, OcclusionConfig, ParseConfig, from_dict
    from .inference import SearchOptions, ZSource, search, search_figure
    from .occlusion import rule_from_config
    from .occlusion.learned import WEIGHTS as OCCLUDER_WEIGHTS
    from .io import write_json
    from .runtime import resolve_device

    params = _params(args.params, required=not args.assume_holistic)
    if args.assume_holistic:
        source = ZSource()
    else:
        parse = from_dict(ParseConfig, params.get("parse") or {}, "parse")
        rule = rule_from_config(from_dict(OcclusionConfig, params.get("occlusion") or {}, "occlusion"))
        occluder = from_dict(OccluderConfig, params.get("occluder") or {}, "occluder")
        source = ZSource(parse, rule, workers=parse.workers, occluder=OCCLUDER_WEIGHTS,
                         threshold=occluder.threshold)
    feat_norm = bool((params.get("evaluate") or {}).get("feat_norm", True))
    opts = SearchOptions(top_k=args.top_k, distance=args.distance, feat_norm=feat_norm,
                         query_camid=args.query_camid, gallery_camid=args.gallery_camid,
                         batch_size=args.batch_size)
    out = Path(args.out)
    cache_dir = Path(args.cache_dir) if args.cache_dir else out.parent / "ogfr-cache"
    doc = search(args.model, args.query, args.gallery, source, opts, cache_dir, resolve_device(args.device))
    write_json(out, doc)
    cache = doc["gallery"]["cache"]
    print(f"{doc['method']} model {args.model}: {doc['distance']} distance, z {doc['z_source']}; gallery "
          f"{doc['gallery']['dir']}: {doc['gallery']['images']} images ({cache['reused']} cached, "
          f"{cache['embedded']} embedded now, {len(doc['gallery']['skipped'])} unreadable skipped)")
    for q in doc["queries"]:
        print(f"query {q['path']}  z={''.join(map(str, q['z']))} (type {q['occlusion_type']}), "
              f"visible parts {sum(q['visibility'])}/{len(q['visibility'])}")
        for r in q["results"]:
            print(f"  {r['rank']:>3}. {r['distance']:.4f}  {r['path']}")
    print(f"wrote {out}")
    if args.figure:
        print(f"wrote {search_figure(doc, args.figure)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .config import DataConfig, from_dict
    from .inference import InferenceInputError, export_model

    sources = args.verify_images
    if not sources:
        data = (_params(args.params, required=False).get("data")) or None
        if data is None:
            raise InferenceInputError(f"the export is checked on real crops: pass --verify-images DIR|IMG "
                                      f"(no {args.params} with data.root to take them from)")
        sources = [from_dict(DataConfig, data, "data").root]
    result = export_model(args.model, args.format, args.out, sources, args.tolerance, args.opset)
    for line in result.lines():
        print(line)
    print(f"wrote {result.path} ({result.format}, {result.bytes / 2**20:.1f} MiB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``ogfr`` argument parser (subcommands ``search`` and ``export``)."""
    parser = argparse.ArgumentParser(prog="ogfr", description="Use a trained OGFR checkpoint: search a gallery, "
                                                               "export the inference branch.")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="rank a gallery folder for query images",
                       description="Rank the images below --gallery for each --query image (Eq. 23 distance).")
    s.add_argument("--model", required=True, help="checkpoint, e.g. models/<dataset>/model.pt")
    s.add_argument("--query", required=True, nargs="+", help="query image file(s)")
    s.add_argument("--gallery", required=True, help="folder of gallery images (searched recursively)")
    s.add_argument("--top-k", type=int, default=10, help="results per query (default 10)")
    s.add_argument("--out", default="results.json", help="JSON results (default results.json); the gallery "
                                                         "feature cache goes beside it, in ogfr-cache/")
    s.add_argument("--figure", help="also draw the rank lists (PNG, shows the images)")
    s.add_argument("--assume-holistic", action="store_true",
                   help="skip parsing: z = 0 (no occluded part) for every image")
    s.add_argument("--params", default="params.yaml",
                   help="params the model was trained with: parse backend, occlusion rule, evaluate.feat_norm")
    s.add_argument("--distance", default="visibility", choices=("visibility", "global"),
                   help="visibility = Eq. (23) (default); global = global feature only")
    s.add_argument("--query-camid", type=int, default=0, help="camera id of the queries (0-based, default 0)")
    s.add_argument("--gallery-camid", type=int, default=0, help="camera id of the gallery images (default 0)")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    s.add_argument("--cache-dir", help="gallery feature cache folder (default: ogfr-cache/ beside --out)")
    s.set_defaults(func=_search)

    e = sub.add_parser("export", help="export the inference branch (ONNX / TorchScript), checked on real crops",
                       description="Export the student (or baseline) branch with a dynamic batch axis; inputs "
                                   "images, z, camids (see README). Written only if it matches PyTorch.")
    e.add_argument("--model", required=True, help="checkpoint, e.g. models/<dataset>/model.pt")
    e.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    e.add_argument("--out", required=True, help="output file, e.g. student.onnx or student.pt")
    e.add_argument("--verify-images", nargs="+",
                   help="real crops to check the export on (files or folders; default: data.root of --params)")
    e.add_argument("--params", default="params.yaml", help="where data.root is read when --verify-images is absent")
    e.add_argument("--tolerance", type=float, default=1e-4, help="max |Δ| allowed on the features (default 1e-4)")
    e.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    e.set_defaults(func=_export)
    return parser


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (a multi-line message, e.g. a list of missing checkpoint keys,
    is joined with ``; ``)."""
    return f"{type(exc).__name__}: " + re.sub(r"\s*\n\s*", "; ", str(exc).strip())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ogfr`` console script; returns the exit status."""
    from .runtime import setup_logging, user_error_types

    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # classified: user errors → one line; bugs re-raised untouched
        if not isinstance(exc, user_error_types()):
            raise
        log.error("%s", one_line(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
