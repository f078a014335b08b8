"""Report sections: functions from already-read data (:mod:`..sources`) to one
:class:`~ogfr_core.report.render.Section` each, put in reading order by :func:`..build.report_sections`.

- :mod:`.summary`: the first screen (what was run, OGFR vs baseline, the verdicts), the run's setup and
  its results beside the paper's;
- :mod:`.runs`: sections over many runs (method comparison, OGFR's ablations in the Table IV layout,
  recipe selection, the appendix of every run);
- :mod:`.outputs`: the other stages' outputs (curves, CMC, occlusion, masks, retrievals, parsing);
- :mod:`.common`: shared names and :class:`~.common.ConfigRefs` (long configurations → appendix).
"""
from .common import ConfigRefs
from .outputs import (cmc_section, erasing_masks_section, occluded_benchmark_section, occlusion_types_section,
                      parsing_section, retrievals_section, training_curves_section, z_accuracy_section)
from .runs import disclosures, merge_by_content, method_section, runs_appendix, table_iv_section, validation_section
from .summary import headline_section, results_section, setup_section

__all__ = ["ConfigRefs", "cmc_section", "disclosures", "erasing_masks_section", "headline_section",
           "merge_by_content", "method_section", "occluded_benchmark_section", "occlusion_types_section",
           "parsing_section", "results_section", "retrievals_section", "runs_appendix", "setup_section",
           "table_iv_section", "training_curves_section", "validation_section", "z_accuracy_section"]
