

def test_distinct_runs_drops_a_run_listed_twice():
    from ogfr_core.report.sources import distinct_runs

    a = {"name": "t-ogfr-s0 @abc", "params": {"train.seed": 0}, "metrics": {"datasets.d.visibility.mAP": 0.36}}
    head = {"name": "main", "params": {"train.seed": 0, "data.root": "x"},  # dvc exp show: other key path
            "metrics": {"reports/metrics.json:datasets.d.visibility.mAP": 0.36, "dvclive:loss": 3.0}}
    b = {"name": "t-ogfr-s1 @abc", "params": {"train.seed": 1}, "metrics": {"datasets.d.visibility.mAP": 0.35}}
    assert [r["name"] for r in distinct_runs([a, head, b, dict(b, name="workspace")])] == [a["name"], b["name"]]


def test_distinct_runs_keeps_runs_that_differ_only_in_a_test_time_extra():
    """CpaCol with a longer stage II: same stage-I features (same standard numbers), another re-scoring row."""
    from ogfr_core.report.sources import distinct_runs

    std = {"datasets.d.visibility.mAP": 0.30, "datasets.d.global.mAP": 0.30}
    a = {"name": "st2-4", "params": {}, "metrics": dict(std, **{"datasets.d.cpacol_rescore.mAP": 0.301})}
    b = {"name": "st2-24", "params": {}, "metrics": dict(std, **{"datasets.d.cpacol_rescore.mAP": 0.317})}
    assert [r["name"] for r in distinct_runs([a, b, dict(b, name="again")])] == ["st2-4", "st2-24"]


def test_another_methods_params_do_not_split_a_configuration():
    """A peer's sub-section (train.model.cpacol.*, evaluate.cpacol.*) and OGFR's agent lr are inert for
    the other methods: OGFR runs made before and after a CpaCol default changed are one configuration,
    labelled without it; for CpaCol runs the same change is a configuration of their own."""
    from ogfr_core.report.experiments import group_runs, is_config_param

    ref = {"train.model.method": "ogfr", "train.model.cpacol.stage2_epochs": 24,
           "evaluate.cpacol.weight_source": "validation", "train.agent_lr_scale": 100.0}
    old = {"train.model.cpacol.stage2_epochs": 4, "evaluate.cpacol.weight_source": "official_code"}
    assert not is_config_param("train.model.cpacol.stage2_epochs", ref)
    assert is_config_param("train.model.cpacol.stage2_epochs", dict(ref, **{"train.model.method": "cpacol"}))
    assert not is_config_param("train.agent_lr_scale", {"train.model.method": "baseline"})
    assert is_config_param("train.agent_lr_scale", ref) and not is_config_param("train.seed", ref)
    assert not is_config_param("evaluate.part_map", ref)  # adds diagnostics only: runs before/after are one config
    base = {"train.model.method": "baseline"}  # Baseline.loss reads the label smoothing and triplet margin only
    assert not is_config_param("train.loss.teacher_id_weight", base) and is_config_param("train.loss.teacher_id_weight", ref)
    assert is_config_param("train.loss.label_smoothing", base) and is_config_param("train.loss.triplet_margin", base)

    def run(name, seed, **params):
        return {"name": name, "params": dict(ref, **{"train.seed": seed}, **params), "metrics": {}}

    runs = [run("ogfr-s0", 0), run("ogfr-s1", 1, **old), run("base-s0", 0, **old, **{
                "train.model.method": "baseline", "train.agent_lr_scale": 1.0}),
            run("cpacol-s0", 0, **{"train.model.method": "cpacol"}),
            run("cpacol-old-s0", 0, **old, **{"train.model.method": "cpacol"})]
    groups = group_runs(runs, ref)
    assert [(g.label, [r["name"] for r in g.runs]) for g in groups] == [
        ("default", ["ogfr-s0", "ogfr-s1"]), ("train.model.method=baseline", ["base-s0"]),
        ("train.model.method=cpacol", ["cpacol-s0"]),
        ("evaluate.cpacol.weight_source=official_code, train.model.cpacol.stage2_epochs=4, "
         "train.model.method=cpacol", ["cpacol-old-s0"])]


def test_a_param_added_after_a_run_counts_as_its_default_and_equivalent_spellings_group():
    """Runs recorded before a switch existed group with today's default runs (the switch was added with
    the earlier behaviour as its default), not with a run that sets it otherwise; the stem weights in
    .pt or .safetensors are the same tensors."""
    from ogfr_core.report.experiments import group_runs

    ref = {"train.model.method": "ogfr", "train.model.reward_baseline": "frozen",
           "train.model.stem_weights": "models/pretrained/mobilenetv2_imagenet.safetensors"}
    old = {"train.model.method": "ogfr", "train.model.stem_weights": "models/pretrained/mobilenetv2_imagenet.pt"}

    def run(name, seed, params):
        return {"name": name, "params": dict(params, **{"train.seed": seed}), "metrics": {}}

    groups = group_runs([run("new-s0", 0, ref), run("old-s1", 1, old), run("old-s2", 2, old),
                         run("live-s0", 0, dict(ref, **{"train.model.reward_baseline": "live"}))], ref)
    assert [(g.label, [r["name"] for r in g.runs]) for g in groups] == [
        ("default", ["new-s0", "old-s1", "old-s2"]), ("train.model.reward_baseline=live", ["live-s0"])]


def test_a_validation_only_extra_dataset_does_not_split_test_protocol_runs():
    """A run recorded before the occluded validation set was listed (``split: val``) is the same
    configuration as today's default; another *test* set in ``extra_datasets`` is not."""
    from ogfr_core.report.experiments import group_runs

    occ = {"name": "d-occ", "root": "data/derived/d-occ", "layout": "market1501_test"}
    val = {"name": "d-occ-val", "root": "data/derived/d-occ-val", "layout": "market1501_test", "split": "val"}
    ref = {"train.model.method": "ogfr", "evaluate.extra_datasets": [occ, val]}
    runs = [{"name": n, "params": {"train.model.method": "ogfr", "train.seed": i, "evaluate.extra_datasets": e},
             "metrics": {}} for i, (n, e) in enumerate([("now", [occ, val]), ("before", [occ]),
                                                         ("other", [occ, dict(occ, name="x")])])]
    assert [[r["name"] for r in g.runs] for g in group_runs(runs, ref)] == [["now", "before"], ["other"]]


def test_method_sections_are_the_registered_methods_with_their_own_params():
    import dataclasses

    from ogfr_core.config import EvaluateConfig, ModelConfig
    from ogfr_core.model import METHODS
    from ogfr_core.report.experiments import METHOD_SECTIONS

    own = {f.name for cls in (ModelConfig, EvaluateConfig) for f in dataclasses.fields(cls) if f.name in METHODS}
    assert own == set(METHOD_SECTIONS)


def test_a_run_from_before_the_occlusion_rule_param_used_eq2_not_todays_default():
    """occlusion.rule's default became ``covered`` (issue 21): a run recorded without the param ran with
    Eq. (2) and groups with explicit ``pixels`` runs, whose τ and occluder params are inert."""
    from ogfr_core.report.experiments import group_runs

    ref = {"train.model.method": "ogfr", "occlusion.rule": "covered", "occlusion.tau": 0.3, "occluder.steps": 1000}
    runs = [{"name": "old-s1", "params": {"train.model.method": "ogfr", "train.seed": 1}},
            {"name": "pixels-s0", "params": {"train.model.method": "ogfr", "train.seed": 0, "occlusion.rule": "pixels",
                                             "occlusion.tau": 0.8, "occluder.steps": 5}},
            {"name": "covered-s0", "params": {"train.model.method": "ogfr", "train.seed": 0, "occlusion.rule": "covered",
                                              "occlusion.tau": 0.3}},
            {"name": "covered-tau-s0", "params": {"train.model.method": "ogfr", "train.seed": 0,
                                                  "occlusion.rule": "covered", "occlusion.tau": 0.5}}]
    assert [(g.label, [r["name"] for r in g.runs]) for g in group_runs(runs, ref)] == [
        ("occlusion.rule=pixels", ["pixels-s0", "old-s1"]), ("default", ["covered-s0"]),
        ("occlusion.tau=0.5", ["covered-tau-s0"])]


def test_an_fpc_run_from_before_decoder_input_stacked_the_decoder_not_todays_parallel():
    """Under a ``parallel`` default (the switch pending in issue 24) an FPC run recorded without
    ``decoder_input`` counts as ``final``, what it ran; other methods' runs, which never read it, stay put."""
    from ogfr_core.report.experiments import group_runs

    ref = {"train.model.method": "ogfr", "train.model.fpc.decoder_input": "parallel"}
    runs = [{"name": "fpc-old-s0", "params": {"train.model.method": "fpc", "train.seed": 0}},
            {"name": "fpc-final-s1", "params": {"train.model.method": "fpc", "train.seed": 1,
                                                "train.model.fpc.decoder_input": "final"}},
            {"name": "fpc-par-s0", "params": {"train.model.method": "fpc", "train.seed": 0,
                                              "train.model.fpc.decoder_input": "parallel"}},
            {"name": "ogfr-old-s0", "params": {"train.model.method": "ogfr", "train.seed": 0}}]
    groups = {g.label: sorted(r["name"] for r in g.runs) for g in group_runs(runs, ref)}
    assert groups == {"train.model.fpc.decoder_input=final, train.model.method=fpc": ["fpc-final-s1", "fpc-old-s0"],
                      "train.model.method=fpc": ["fpc-par-s0"], "default": ["ogfr-old-s0"]}


def test_occlusion_params_do_not_split_the_baseline():
    """The baseline reads no occlusion label: its runs under two occlusion rules are one configuration,
    and that is true of what it trains on — the augmentation pastes the same pixels whatever z, shares
    and rule it is given (only z_occ differs), and the baseline's forward reads the pixels, the camera
    and the label only (``ogfr_core/model/baseline.py``)."""
    import torch

    from ogfr_core.data.occlusion_aug import occlusion_augment
    from ogfr_core.occlusion import OcclusionRule
    from ogfr_core.report.experiments import is_config_param

    base = {"train.model.method": "baseline", "occlusion.rule": "learned_parts"}
    assert not any(is_config_param(k, base) for k in ("occlusion.rule", "occlusion.tau", "occluder.steps"))
    assert is_config_param("occlusion.rule", dict(base, **{"train.model.method": "ogfr"}))

    images, maps = torch.rand(4, 3, 32, 16), torch.randint(0, 9, (4, 32, 16))
    outs = []
    for rule, z, hidden in ((OcclusionRule("pixels"), torch.zeros(4, 4, dtype=torch.long), None),
                            (OcclusionRule("learned_parts", 5.0, 0.4), torch.ones(4, 4, dtype=torch.long),
                             torch.rand(4, 4))):
        g = torch.Generator().manual_seed(0)
        outs.append(occlusion_augment(images, maps, z, prob=1.0, area=(0.2, 0.4), rule=rule, generator=g,
                                      hidden=hidden))
    assert torch.equal(outs[0].images, outs[1].images) and torch.equal(outs[0].label_maps, outs[1].label_maps)
    assert not torch.equal(outs[0].z, outs[1].z)
