"""The paper's claims as verdicts computed from the recorded seed runs (issue 23 item 7).

Four claims, each judged on the seed runs of OGFR and of the baseline in ``reports/seed_runs.json`` or
``dvc exp`` (test protocol): the runs of the checkout's own configuration (``params.yaml``, any seed, any
run name; :func:`seed_runs` with a ``reference``), so the verdicts follow the default when it changes
(an earlier default's runs, or an ablation, are another configuration); without a reference, the runs
named ``t-ogfr-s<seed>`` / ``t-baseline-s<seed>``:

(a) OGFR > baseline on holistic queries (the dataset's own query set), mAP of each method's primary
    distance (Eq. 23 for OGFR; the global feature for the baseline, whose two distances coincide);
(b) OGFR's relative drop from holistic to occluded queries (``1 − mAP_occ / mAP_hol``, per seed) ≤ the
    baseline's;
(c) the FEP agent erases background more than body on every seed (the evaluation's FEP diagnostics:
    the per-image ``retain_gap`` with its 95 % interval above 0 where recorded, else the pooled
    ``retain_mean_body − retain_mean_background`` > 0; the agent "on": ≥ 2 % of the tokens erased), with the
    fixed-mask probe (``reports/fep_probe.json``: background vs random reward) beside it;
(d) the Eq. 23 distance ≥ the global distance for OGFR on both protocols (paired per seed).

Verdicts (:func:`verdict`): the difference in the claimed direction with its standard error (Welch for
two methods, paired for (d)); **holds** when the difference exceeds 2 standard errors, **does not hold**
when it is below −2 standard errors, **within noise** otherwise (and whenever fewer than 2 seeds per
side make a standard error impossible, the verdict says so).
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from .render import Section

RUN_NAME = re.compile(r"^t-(?P<method>ogfr|baseline)-s(?P<seed>\d+)(-main)?( @[0-9a-f]+)?$")
AGENT_OFF = 0.02  # an agent erasing fewer tokens than this is "off" whatever its AUC


def verdict(diff: float, se: float, k: float = 2.0) -> str:
    """``holds`` if ``diff > k·se``, ``does not hold`` if ``diff < −k·se``, else ``within noise``;
    ``too few seeds`` when the standard error is not finite.

    >>> verdict(1.0, 0.3), verdict(-1.0, 0.3), verdict(0.5, 0.3), verdict(0.5, float("nan"))
    ('holds', 'does not hold', 'within noise', 'too few seeds')
    """
    if not math.isfinite(se):
        return "too few seeds"
    if diff > k * se:
        return "holds"
    if diff < -k * se:
        return "does not hold"
    return "within noise"


def agent_verdict(good: int, n: int, mean_verdict: str) -> str:
    """Claim (c): ``holds`` when the agent is on and erases background more than body on every seed
    (at least 3); ``does not hold`` when that fails on most seeds or the mean gap is significantly
    negative; ``within noise`` otherwise; ``no runs`` without any.

    >>> agent_verdict(3, 3, "within noise"), agent_verdict(1, 3, "holds"), agent_verdict(2, 3, "holds")
    ('holds', 'does not hold', 'within noise')
    """
    if n == 0:
        return "no runs"
    if good == n and n >= 3 and mean_verdict != "does not hold":
        return "holds"
    if mean_verdict == "does not hold" or 2 * good < n:
        return "does not hold"
    return "within noise"


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(mean(a) − mean(b), sqrt(s_a²/n_a + s_b²/n_b))`` (sample variances; NaN se for n < 2)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float(a.mean() - b.mean()) if len(a) and len(b) else float("nan"), float("nan")
    return float(a.mean() - b.mean()), float(math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))


def paired(d: Sequence[float]) -> tuple[float, float]:
    """``(mean(d), s_d / sqrt(n))`` of paired differences (NaN se for n < 2)."""
    d = np.asarray(d, float)
    if len(d) == 0:
        return float("nan"), float("nan")
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")


def seed_runs(runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any] | None = None
              ) -> dict[str, dict[int, dict]]:
    """``{"ogfr": {seed: flattened metrics}, "baseline": {...}}`` from run records (flattened
    ``{"name", "params", "metrics"}``); a later record of the same method and seed replaces an earlier one.

    Args:
        runs: the records.
        reference: flattened params of the configuration to judge (the checkout's ``params.yaml``): a
            run counts for method m when its configuration
            (:func:`~ogfr_core.report.experiments.config_key`) is the reference's with
            ``train.model.method`` = m, whatever its name; its seed is ``train.seed``. None: the runs
            named ``t-<method>-s<seed>`` (optionally ``-main`` and `` @<commit>``).
    """
    out: dict[str, dict[int, dict]] = {"ogfr": {}, "baseline": {}}
    if reference is not None:
        from .experiments import config_key

        wanted = {m: config_key({**reference, "train.model.method": m}, dict(reference)) for m in out}
        for r in runs:
            params = dict(r.get("params") or {})
            method = params.get("train.model.method", "ogfr")
            if method in out and config_key(params, dict(reference)) == wanted[method]:
                out[method][int(params.get("train.seed", 0))] = dict(r.get("metrics") or {})
        return out
    for r in runs:
        m = RUN_NAME.match(str(r.get("name", "")))
        if m:
            out[m["method"]][int(m["seed"])] = dict(r.get("metrics") or {})
    return out


def _map(metrics: Mapping, dataset: str, distance: str) -> float | None:
    v = metrics.get(f"datasets.{dataset}.{distance}.mAP")
    return None if v is None else float(v)


def claims(runs: Sequence[Mapping[str, Any]], dataset: str, occluded: str,
           probe: Mapping[str, Any] | None = None, reference: Mapping[str, Any] | None = None) -> list[dict]:
    """The four verdicts, each ``{"claim", "verdict", "diff", "se", "n", "detail"}`` (numbers in mAP
    points ×100 for (a), (b), (d); in retain-probability points ×100 for (c)).

    Args:
        runs: flattened run records (see :func:`seed_runs`).
        dataset: the holistic test set's name (``data.name``); occluded: the occluded-query set's.
        probe: ``reports/fep_probe.json`` (optional), quoted beside (c).
        reference: the configuration judged (:func:`seed_runs`); None: the runs named ``t-<method>-s<seed>``.
    """
    by = seed_runs(runs, reference)
    og, bl = by["ogfr"], by["baseline"]

    def values(ms: Mapping[int, Mapping], ds: str, dist: str) -> list[float]:
        return [v for v in (_map(m, ds, dist) for _, m in sorted(ms.items())) if v is not None]

    out = []
    a_o, a_b = values(og, dataset, "visibility"), values(bl, dataset, "global")
    d, se = welch(a_o, a_b)
    out.append({"claim": "(a) OGFR > baseline, holistic queries (mAP)", "verdict": verdict(d, se),
                "diff": 100 * d, "se": 100 * se, "n": (len(a_o), len(a_b)),
                "detail": f"OGFR {100 * np.mean(a_o):.1f} vs baseline {100 * np.mean(a_b):.1f}" if a_o and a_b else "no runs"})

    def drops(ms: Mapping[int, Mapping], dist: str) -> list[float]:
        res = []
        for _, m in sorted(ms.items()):
            h, o = _map(m, dataset, dist), _map(m, occluded, dist)
            if h and o is not None:
                res.append(1 - o / h)
        return res

    dr_o, dr_b = drops(og, "visibility"), drops(bl, "global")
    d, se = welch(dr_b, dr_o)  # claimed: OGFR's drop smaller -> baseline's minus OGFR's > 0
    out.append({"claim": "(b) OGFR's relative drop holistic -> occluded <= the baseline's", "verdict": verdict(d, se),
                "diff": 100 * d, "se": 100 * se, "n": (len(dr_o), len(dr_b)),
                "detail": f"drop OGFR {100 * np.mean(dr_o):.1f} % vs baseline {100 * np.mean(dr_b):.1f} %"
                if dr_o and dr_b else "no runs"})

    gaps, cis, erased = [], [], []
    for _, m in sorted(og.items()):
        fep = f"datasets.{dataset}.fep."
        bg, body = m.get(fep + "retain_mean_background"), m.get(fep + "retain_mean_body")
        if m.get(fep + "retain_gap") is not None:  # per-image gap with its 95 % interval (newer runs)
            gaps.append(float(m[fep + "retain_gap"]))
            cis.append(float(m.get(fep + "retain_gap_ci95", float("nan"))))
        elif bg is not None and body is not None:
            gaps.append(float(body) - float(bg))  # erase(background) − erase(body), pooled over patches
            cis.append(float("nan"))
        else:
            continue
        erased.append(1 - float(m.get(fep + "retain_mean", 1.0)))
    d, se = paired(gaps)
    # a seed supports the claim when the agent is on and its gap is > 0 (its 95 % interval above 0
    # where the run recorded one)
    good = sum((g - c > 0 if math.isfinite(c) else g > 0) and e >= AGENT_OFF for g, c, e in zip(gaps, cis, erased))
    positive = sum(g > 0 for g in gaps)
    off = sum(e < AGENT_OFF for e in erased)
    v = agent_verdict(good, len(gaps), verdict(d, se))
    detail = (f"background − body erased, per seed: "
              f"{', '.join(f'{100 * g:+.1f}' + (f' ± {100 * c:.1f}' if math.isfinite(c) else '') for g, c in zip(gaps, cis))} points; "
              f"erased overall {', '.join(f'{100 * e:.1f} %' for e in erased)}; {positive}/{len(gaps)} seeds > 0, "
              f"{off} agent(s) off (< {100 * AGENT_OFF:.0f} % erased)") if gaps else "no FEP diagnostics"
    if probe and "background" in (probe.get("masks") or {}):
        b = probe["masks"]["background"]
        vs = b.get("reward_eq8_minus_random") or {}
        detail += (f"; fixed-mask probe: Eq. 8 reward of erasing background {b['reward_eq8']['mean']:+.4f} ± "
                   f"{b['reward_eq8']['se']:.4f}, minus random {vs.get('mean', float('nan')):+.4f} ± "
                   f"{vs.get('se', float('nan')):.4f}")
        change = (probe["masks"].get("all") or {}).get("feature_change")
        if change:
            detail += f"; erasing every patch moves the purified global feature by {100 * change['mean']:.1f} %"
    out.append({"claim": "(c) the FEP agent erases background more than body on every seed", "verdict": v,
                "diff": 100 * d, "se": 100 * se, "n": (len(gaps),), "detail": detail})

    diffs, parts = [], []
    for ds in (dataset, occluded):
        per = [v_ - g_ for v_, g_ in ((_map(m, ds, "visibility"), _map(m, ds, "global"))
                                      for _, m in sorted(og.items())) if v_ is not None and g_ is not None]
        if per:
            parts.append(f"{ds} {100 * float(np.mean(per)):+.2f} (n = {len(per)})")
        diffs += per
    d, se = paired(diffs)
    out.append({"claim": "(d) Eq. 23 distance >= global distance (OGFR, both protocols)", "verdict": verdict(d, se),
                "diff": 100 * d, "se": 100 * se, "n": (len(diffs),),
                "detail": "Eq. 23 − global mAP: " + ", ".join(parts) if diffs else "no runs"})
    return out


def claims_section(runs: Sequence[Mapping[str, Any]], dataset: str, occluded: str,
                   probe: Mapping[str, Any] | None = None, reference: Mapping[str, Any] | None = None):
    """The report's "The paper's claims, judged on the seed runs" section (a table of :func:`claims`)."""
    sec = Section("The paper's claims, judged on the seed runs")
    rows = claims(runs, dataset, occluded, probe, reference)
    which = ("the seed runs of this checkout's configuration (`params.yaml`; OGFR and the same with "
             "`train.model.method=baseline`, any run name)" if reference is not None else
             "the seed runs `t-ogfr-s<seed>` / `t-baseline-s<seed>`")
    sec.p(f"Each claim of the paper, computed from {which} "
          "(`make seeds`, `make record-seeds`; test protocol). *diff* is in the claimed direction (points); "
          "**holds** = diff > 2 standard errors, **does not hold** = diff < −2 standard errors, else **within "
          "noise**. (c) needs the agent on (≥ 2 % of tokens erased) and background erased more than body on "
          "3 of 3 seeds. A claim that does not hold after a faithful implementation is a result.")
    sec.table(["claim", "verdict", "diff ± se", "seeds", "numbers"],
              [[r["claim"], f"**{r['verdict']}**",
                f"{r['diff']:+.2f} ± {r['se']:.2f}" if math.isfinite(r["se"]) else
                (f"{r['diff']:+.2f}" if math.isfinite(r["diff"]) else "–"),
                " / ".join(str(n) for n in r["n"]), r["detail"]] for r in rows])
    return sec


def parse_sets(sets: Sequence[str]) -> list[tuple[str, Any]]:
    """``["key=value", ...]`` → ``[(key, value), ...]``, values read as YAML (as ``dvc exp run -S`` does).

    Raises:
        ValueError: an item without ``=``.
    """
    import yaml

    out = []
    for s in sets:
        key, sep, value = s.partition("=")
        if not sep:
            raise ValueError(f"--set {s!r}: expected key=value, e.g. train.loss.teacher_id_weight=0.5")
        out.append((key, yaml.safe_load(value)))
    return out


def override(reference: Mapping[str, Any], sets: Sequence[str]) -> dict:
    """The flattened ``reference`` configuration with ``key=value`` overrides (:func:`parse_sets`): the
    configuration of an ablation, whose verdicts :func:`claims` then computes from its own seed runs (the
    baseline's runs match wherever the override is inert for the baseline,
    :func:`~ogfr_core.report.experiments.is_config_param`).

    Raises:
        ValueError: an override without ``=``, or a key that is not a param of ``reference``.
    """
    out = dict(reference)
    for key, value in parse_sets(sets):
        if key not in out:
            raise ValueError(f"--set {key}: not a param of the checkout's params file (check the spelling)")
        out[key] = value
    return out
