"""CI metric-regression gate (thin): apply the CI profile, `dvc repro`, compare with the reference.

    python -m stages.ci_gate                     # apply ci/profile.yaml, repro, gate (exit 1 on regression)
    python -m stages.ci_gate --no-repro          # only compare reports/metrics.json with the reference
    python -m stages.ci_gate --update-reference  # after a deliberate change: store current metrics

It rewrites params.yaml with the CI profile, so run it in a scratch clone beside the checkout
(`git clone . ../ogfr-ci && cd ../ogfr-ci && make ci-gate`); CI runs it in its own fresh clone.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from ogfr_core.config import apply_profile
from ogfr_core.io import write_json, write_text
from ogfr_core.regression import check, load_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", action="append", default=None,
                    help="profile(s) merged in order over params.yaml (default: ci/profile.yaml); e.g. "
                         "add ci/worse.yaml to see the gate fail on a deliberately worse config")
    ap.add_argument("--gate", default="ci/gate.yaml", help="tolerances per gated metric")
    ap.add_argument("--reference", default="ci/reference_metrics.json")
    ap.add_argument("--no-repro", action="store_true", help="skip applying the profile and dvc repro")
    ap.add_argument("--update-reference", action="store_true")
    ap.add_argument("--data-root", default="",
                    help="dataset folder to use instead of params.yaml's data.root (a clone that is not "
                         "beside ../shared; .ci/run passes $OGFR_DATA_ROOT or what it finds)")
    args = ap.parse_args(argv)

    if not args.no_repro:
        for profile in args.profile or ["ci/profile.yaml"]:
            apply_profile(Path("params.yaml"), Path(profile))
        if args.data_root:
            with tempfile.TemporaryDirectory() as tmp:
                override = Path(tmp) / "data_root.yaml"
                override.write_text(yaml.safe_dump({"data": {"root": str(Path(args.data_root).resolve())}}))
                apply_profile(Path("params.yaml"), override)
        subprocess.run([sys.executable, "-m", "dvc", "repro"], check=True)
    gate = yaml.safe_load(Path(args.gate).read_text())
    # one document: {prefix: contents of that metrics file}, e.g. eval = reports/metrics.json
    current = {prefix: load_json(path, "run `dvc repro` (or drop --no-repro)")
               for prefix, path in gate["metrics"].items()}
    if args.update_reference:
        write_json(args.reference, current)
        print(f"reference updated: {args.reference} — commit it with a note saying why")
        return 0
    reference = load_json(args.reference, "create it once with --update-reference and commit it")
    result = check(current, reference, gate["tolerances"], set(gate.get("lower_is_better") or []))
    report = f"# CI metric gate: {'PASSED' if result.passed else 'FAILED'}\n\n{result.table()}\n"
    write_text("reports/gate.md", report)
    print(report)
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
