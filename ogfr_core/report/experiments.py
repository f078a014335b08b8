"""Experiment runs (``dvc exp show``) → tables that compare configurations over seeds.

Runs that differ only in ``train.seed`` (and in knobs that do not change results: threads, loader
workers, logging) are one **configuration**; the report shows its mean ± sample standard deviation
(``ddof = 1``) over seeds, then the per-seed rows, so a difference between two methods can be read
against the seed-to-seed spread. A configuration is labelled by the params where it differs from the
reference run (HEAD's, i.e. ``params.yaml``), e.g. ``train.model.method=baseline``.

Runs with a validation split (``data.val_ids > 0``) are recipe-selection runs: their metrics live
under ``datasets.<name>:val`` and go to a separate table (hyper-parameters are chosen there, never on
the test set).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

#: params that never change a run's numbers (or only its seed): not part of a configuration
#: (``data.root`` is where the same dataset, ``data.name``, lies on the machine that ran it;
#: ``evaluate.part_map`` only adds per-part diagnostics to metrics.json, every other number unchanged)
NON_CONFIG_PARAMS = ("train.seed", "train.threads", "data.root", "train.log_every", "data.num_workers", "parse.workers",
                     "evaluate.batch_size", "evaluate.device", "train.device", "parse.device",
                     "report.num_retrieval_queries", "report.num_mask_examples", "evaluate.retrieval_queries",
                     "evaluate.mask_examples", "parse.overlay_grid", "evaluate.part_map")


@dataclass
class ConfigGroup:
    """Runs of one configuration: ``label`` (params differing from the reference), ``params`` (of the
    first run), ``runs`` (each ``{"name", "params", "metrics"}``), sorted by seed."""

    label: str
    params: dict
    runs: list[dict] = field(default_factory=list)

    @property
    def seeds(self) -> list[Any]:
        return [r["params"].get("train.seed") for r in self.runs]


#: the ``train.loss`` params the baseline reads (:meth:`ogfr_core.model.baseline.Baseline.loss`: L_id + L_tri);
#: the rest of ``train.loss`` weighs OGFR's terms and is inert for a baseline run
BASELINE_LOSS_PARAMS = ("train.loss.label_smoothing", "train.loss.triplet_margin")

#: params sub-sections of one method each (``train.model.<name>.*``, ``evaluate.<name>.*``): inert for
#: a run of any other method (the registered methods with params of their own; checked by a test)
METHOD_SECTIONS = ("fed", "pgfl_kd", "fpc", "cpacol")


def is_config_param(key: str, params: dict) -> bool:
    """Whether ``key`` can change the numbers of the run with (flattened) ``params``: not in
    :data:`NON_CONFIG_PARAMS`, not another method's sub-section (:data:`METHOD_SECTIONS`, e.g.
    ``train.model.cpacol.stage2_epochs`` for an OGFR run), not ``train.agent_lr_scale`` (the lr of
    OGFR's FEP agent) for a method without that agent, not ``occlusion.tau`` / ``occluder.*`` under
    an occlusion rule that does not read them, and no ``occlusion.*`` / ``occluder.*`` for the baseline
    (it reads no occlusion label: its forward sees the augmented pixels only, which no z changes), nor
    ``train.loss.*`` beyond :data:`BASELINE_LOSS_PARAMS`. So a change of a peer's default in params.yaml does not
    split the other methods' runs into new configurations."""
    if key in NON_CONFIG_PARAMS:
        return False
    method = params.get("train.model.method", "ogfr")
    parts = key.split(".")
    section = parts[2] if parts[:2] == ["train", "model"] and len(parts) > 3 else (
        parts[1] if parts[0] == "evaluate" and len(parts) > 2 else None)
    if section in METHOD_SECTIONS and section != method:
        return False
    if method == "baseline" and parts[0] in ("occlusion", "occluder"):  # it reads no z: its forward sees only
        return False  # the augmented pixels, which do not depend on z (tests/test_report_experiments.py)
    if method == "baseline" and parts[:2] == ["train", "loss"] and key not in BASELINE_LOSS_PARAMS:
        return False  # OGFR's loss weights (KD, L_mse, the teacher's ID loss, ...): Baseline.loss reads none
    rule = params.get("occlusion.rule", "pixels")
    if key == "occlusion.tau":  # read by every rule but the paper's
        return rule != "pixels"
    if parts[0] == "occluder":  # the learned occluder mask and parse: read by the covered / learned_* rules only
        from ..occlusion import COVER_RULES

        return rule in COVER_RULES
    return not (key == "train.agent_lr_scale" and method != "ogfr")


def config_value(key: str, value: Any) -> str:
    """A param's value as compared between runs: JSON of the value (dicts by content, whatever their key
    order — a params file rewritten by a script), with :data:`EQUIVALENT_VALUES` applied."""
    import json

    return json.dumps(EQUIVALENT_VALUES.get(key, lambda v: v)(value), sort_keys=True, default=repr)


#: params whose different spellings mean the same run: the stem's ImageNet weights converted to
#: ``.pt`` (before) or ``.safetensors`` (since the pretrained stage wrote a byte-stable format) hold the
#: same tensors (tests/test_pretrained.py)
#: ``evaluate.extra_datasets``: the entries with ``split: val`` (the occluded validation set) are read only in
#: a validation run, so a test-protocol run is the same run with or without them
EQUIVALENT_VALUES: dict[str, Callable[[Any], Any]] = {
    "train.model.stem_weights": lambda v: str(v).rsplit(".", 1)[0] if str(v).endswith((".pt", ".safetensors")) else v,
    "evaluate.extra_datasets": lambda v: [d for d in v if not (isinstance(d, dict) and d.get("split") == "val")]
    if isinstance(v, list) else v,
}


#: params whose default changed after runs had been recorded without them: such a run predates the
#: param, so it ran with the earlier behaviour, not with today's default (``occlusion.rule`` became
#: ``covered`` in issue 21; before the param existed every run used Eq. 2. FPC's runs recorded before
#: ``decoder_input`` existed stacked the decoder on the final output: ``final``, today's default too, listed so
#: that the pending switch to ``parallel`` (preferred on validation, issue 24) cannot regroup them)
EARLIER_DEFAULTS: dict[str, Any] = {"occlusion.rule": "pixels", "train.model.fpc.decoder_input": "final"}


def with_defaults(params: dict, reference: dict) -> dict:
    """``params`` with every param it lacks taken from ``reference`` (params.yaml now): a param was added
    after that run, and every param is added with the default that reproduces the earlier behaviour
    (the project's rule for new switches), so the run used what that default does — unless the default
    changed since (:data:`EARLIER_DEFAULTS`: then the earlier value)."""
    return {**reference, **EARLIER_DEFAULTS, **params}


def config_key(params: dict, reference: dict | None = None) -> tuple:
    """Hashable configuration of a run: its params (missing ones from ``reference``, :func:`with_defaults`)
    that :func:`is_config_param`, values by :func:`config_value`."""
    params = with_defaults(params, reference or {})
    return tuple(sorted((k, config_value(k, v)) for k, v in params.items() if is_config_param(k, params)))


def config_diff(params: dict, reference: dict) -> list[tuple[str, Any]]:
    """``(key, value)`` for every configuration param of the run (:func:`is_config_param`) that differs
    from ``reference``, sorted by key; params the run does not have (an older params file) are not listed
    (they count as the reference's, :func:`with_defaults`) unless their default changed since
    (:data:`EARLIER_DEFAULTS`)."""
    params = {**{k: v for k, v in EARLIER_DEFAULTS.items() if k in reference}, **params}
    keys = sorted(k for k in params if is_config_param(k, params))
    return [(k, params.get(k)) for k in keys if config_value(k, params.get(k)) != config_value(k, reference.get(k))]


def config_label(params: dict, reference: dict) -> str:
    """``k=v, …`` of :func:`config_diff` ("default" if none)."""
    diff = [f"{k}={v}" for k, v in config_diff(params, reference)]
    return ", ".join(diff) if diff else "default"


def group_runs(runs: Sequence[dict], reference: dict) -> list[ConfigGroup]:
    """Group ``runs`` by :func:`config_key` (missing params from ``reference``), in first-seen order;
    runs inside a group by seed."""
    groups: dict[tuple, ConfigGroup] = {}
    for r in runs:
        key = config_key(r["params"], reference)
        if key not in groups:
            groups[key] = ConfigGroup(config_label(r["params"], reference), r["params"])
        groups[key].runs.append(r)
    for g in groups.values():
        g.runs.sort(key=lambda r: (r["params"].get("train.seed") is None, r["params"].get("train.seed", 0), r["name"]))
    return list(groups.values())


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof = 1``; NaN for one value) of the finite values.

    >>> mean_std([0.2, 0.4])
    (0.30000000000000004, 0.14142135623730953)
    """
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return float("nan"), float("nan")
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def fmt_pct(mean: float, std: float = float("nan")) -> str:
    """Percent with one decimal, ``± std`` when the std is defined; "–" for NaN."""
    if not math.isfinite(mean):
        return "–"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if math.isfinite(std) else "")


def metric_columns(dataset_keys: Sequence[tuple[str, str]], metrics: Sequence[str] = ("rank-1", "mAP")
                   ) -> list[tuple[str, str]]:
    """``(header, dotted metric key)`` for each (dataset key, short name) × metric (visibility distance)."""
    return [(f"{short} {m}", f"datasets.{ds}.visibility.{m}") for ds, short in dataset_keys for m in metrics]


def comparison_rows(groups: Sequence[ConfigGroup], columns: Sequence[tuple[str, str]],
                    lead: Any = None, per_seed: bool = True) -> list[list[str]]:
    """Table rows: for each group a ``mean ± std (n seeds)`` row, then one row per seed (unless
    ``per_seed`` is false).

    ``lead(group) -> list[str]`` gives the leading cells of a group (e.g. Table IV switch marks);
    per-seed rows repeat them empty.
    """
    rows = []
    for g in groups:
        first = lead(g) if lead else []
        usable = [r for r in g.runs if any(k in r["metrics"] for _, k in columns)]
        if not usable:
            continue
        stats = [mean_std([r["metrics"].get(k) for r in usable]) for _, k in columns]
        n = len(usable)
        rows.append([*first, g.label, f"mean of {n}" if n > 1 else usable[0]["name"],
                     *[fmt_pct(m, s) for m, s in stats]])
        if n > 1 and per_seed:
            for r in usable:
                rows.append([*([""] * len(first)), "", f"{r['name']} (seed {r['params'].get('train.seed', '?')})",
                             *[fmt_pct(r["metrics"].get(k, float("nan"))) for _, k in columns]])
    return rows


def test_time_extras(group: ConfigGroup) -> dict[str, str]:
    """The flagged test-time extras (``reports/metrics.json`` → ``test_time_extras``) that any run of
    ``group`` evaluated: ``{variant: "flag label; flag label; option=value, ..."}``, e.g.
    ``{"cpacol_rescore": "re-scores the top-k only; top_k=100, weight=0.3"}``, in first-seen order.
    Options are the short ones the extra recorded (numbers, strings up to 20 characters)."""
    out: dict[str, str] = {}
    for r in group.runs:
        for k, v in r["metrics"].items():
            if not k.startswith("test_time_extras.") or k.split(".", 1)[1] in out:
                continue
            variant = k.split(".", 1)[1]
            labels = list(v) if isinstance(v, list) else [str(v)]
            opts = {o.rsplit(".", 1)[1]: x for o, x in r["metrics"].items()
                    if f".{variant}.options." in o and (isinstance(x, (int, float)) or len(str(x)) <= 20)}
            if opts:
                labels.append(", ".join(f"{o}={x}" for o, x in opts.items()))
            out[variant] = "; ".join(labels)
    return out


def extra_columns(columns: Sequence[tuple[str, str]], variant: str) -> list[tuple[str, str]]:
    """:func:`metric_columns` of the standard (visibility) distance → the same cells of a test-time
    extra ``variant`` (its metrics sit beside the distances: ``datasets.<ds>.<variant>.<metric>``)."""
    return [(h, k.replace(".visibility.", f".{variant}.")) for h, k in columns]


def extra_rows(group: ConfigGroup, columns: Sequence[tuple[str, str]], lead: Any = None) -> list[list[str]]:
    """One mean row per flagged test-time extra of ``group`` (:func:`test_time_extras`, in first-seen
    order), labelled ``+ <variant> (<flags; options>)`` and read from the extra's own metrics
    (:func:`extra_columns`); ``lead(group)`` gives its leading cells, as in :func:`comparison_rows`.
    A validation run's ``@w=<w>`` sweep variants are extras too, so each gets its row."""
    rows = []
    for variant, flags in test_time_extras(group).items():
        extra = ConfigGroup(f"+ {variant} ({flags})", group.params, group.runs)
        rows += comparison_rows([extra], extra_columns(columns, variant), lead, per_seed=False)
    return rows


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → ``{"a.b.c": value}`` (lists are values)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = d
    return out


def load_recorded_runs(path) -> list[dict]:
    """Runs recorded in a committed JSON (``reports/recipe_selection.json``): validation-split runs made
    with the stage scripts and params overrides outside ``dvc exp`` (so they survive a fresh clone).

    Format: ``{"runs": [{"name", "commit", "params": {nested params.yaml of the run},
    "metrics": {nested reports/metrics.json}}]}`` → ``[{"name": "<name> @<commit>", "params", "metrics"}]``
    with flattened keys, as :func:`ogfr_core.report.sources.parse_experiments` returns. Missing file → [].
    """
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return []
    doc = json.loads(path.read_text())
    return [{"name": f"{r['name']} @{str(r.get('commit', ''))[:7]}", "params": flatten(r.get("params", {})),
             "metrics": flatten(r.get("metrics", {}))} for r in doc.get("runs", [])]
