"""Merge a partial params file (a profile) over params.yaml, validated; then run `dvc exp run`.

    python -m stages.apply_profile params/paper.yaml     # the paper's configuration (GPU)
    python -m stages.apply_profile ci/profile.yaml       # the CI profile (what .ci/run does)
"""
from __future__ import annotations

import argparse

from ogfr_core.config import apply_profile


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    apply_profile(args.params, args.profile)
    print(f"{args.params}: merged {args.profile}")


if __name__ == "__main__":
    main()
