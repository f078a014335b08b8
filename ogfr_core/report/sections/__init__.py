"""Report sections: functions from already-read data (:mod:`..sources`) to one
:class:`~ogfr_core.report.render.Section` each, in reading order by :func:`..build.build_report`.

- :mod:`.summary`: the run's setup and its results beside the paper's;
- :mod:`.runs`: sections over many runs (method comparison, Table IV, validation);
- :mod:`.outputs`: the other stages' outputs (curves, CMC, occlusion, masks, retrievals, parsing).
"""
from .outputs import (cmc_section, erasing_masks_section, occluded_benchmark_section, occlusion_types_section,
                      parsing_section, retrievals_section, training_curves_section, z_accuracy_section)
from .runs import ablation_section, disclosures, elsewhere_methods, method_section
from .summary import results_section, setup_section

__all__ = ["ablation_section", "cmc_section", "disclosures", "elsewhere_methods", "erasing_masks_section",
           "method_section", "occluded_benchmark_section", "occlusion_types_section", "parsing_section",
           "results_section", "retrievals_section", "setup_section", "training_curves_section",
           "z_accuracy_section"]
