"""Named settings of the Table-1 study (``ablation.preset``); any key set
next to the preset in params.yaml wins over the preset's value.

``paper`` -- the paper's regime (dc-nas.md §4.1), scaled to the embedded
digits data: D~ = 10 % of D (paper: 10 %), early stopping at η of 2, 3 and 4
epochs against 30 epochs of full training (7-13 %; paper: η ∈ {5, 10, 20,
30} of 200, i.e. 2.5-15 %; η = 1 is excluded because every feature is 1 at
the first epoch), K ∈ {1, 3, 5, 10} (paper: up to 50), s = 40 sampled
networks (paper: all 15,625 of the space) so that three replicates with
every network fully trained fit in about half an hour on 2 CPU cores.
Early stopping is then far from the final answer, which is where the paper
finds that clustering matters.

``smoke`` -- the fast settings the study ran with before presets: D~ = 50 %
of D, η up to 6 of 10 full epochs, s = 60. Early stopping here is nearly
the final answer; use it to check that the study runs, not to judge DC-NAS.
"""
from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"num_archs": 40, "subset_fraction": 0.1, "epochs": 4, "eta_list": [2, 3, 4],
              "k_list": [1, 3, 5, 10], "full_epochs": 30},
    "smoke": {"num_archs": 60, "subset_fraction": 0.5, "epochs": 6, "eta_list": [2, 4, 6],
              "k_list": [1, 3, 5, 10], "full_epochs": 10},
}
