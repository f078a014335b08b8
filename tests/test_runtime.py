"""Stage entry point: user errors become one logged line + exit 1; bugs keep their traceback."""
from __future__ import annotations

import pytest

from ogfr_core.config import ConfigError
from ogfr_core.runtime import run_stage


def test_user_error_is_one_line_and_exit_1(caplog):
    def main():
        raise ConfigError("train.epoch: unknown key(s) ['epoch']")

    with pytest.raises(SystemExit) as exit_:
        run_stage(main)
    assert exit_.value.code == 1
    assert "ConfigError: train.epoch: unknown key(s) ['epoch']" in caplog.text


def test_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run_stage(lambda: 1 / 0)


@pytest.mark.parametrize("ret, code", [(None, 0), (0, 0), (3, 3)])
def test_exit_status_follows_main(ret, code):
    with pytest.raises(SystemExit) as exit_:
        run_stage(lambda: ret)
    assert exit_.value.code == code


def test_the_occlusion_stages_errors_are_user_errors():
    """The errors the occlusion labels raise on a missing input name the file and the stage to rerun:
    one line, exit 1 (the segmenter's weights are a FileNotFoundError)."""
    from ogfr_core.occlusion.learned import OccluderWeightsError
    from ogfr_core.occlusion.table import MissingOccluderMaskError
    from ogfr_core.occlusion.truth import OcclusionTruthError
    from ogfr_core.runtime import is_user_error

    for err in (MissingOccluderMaskError("no masks; run `dvc repro occluder`"),
                OccluderWeightsError("x.safetensors: no weights; run `dvc repro occluder`"),
                OcclusionTruthError("occluders.parquet: missing; rerun `dvc repro occlude`")):
        assert is_user_error(err), type(err).__name__
