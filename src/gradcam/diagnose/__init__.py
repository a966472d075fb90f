"""Diagnosing image classifiers with Grad-CAM (section 6 of the paper).

* :mod:`gradcam.diagnose.failures`: the model's mistakes, explained for the true and the
  predicted class and grouped by where the model looked (6.1, Fig. 6);
* :mod:`gradcam.diagnose.adversarial`: a targeted attack and what it did to the maps (6.2);
* :mod:`gradcam.diagnose.bias`: how much of each class's map falls on each annotated region
  kind, to find a cue a class relies on more than its own object (6.3);
* :mod:`gradcam.diagnose.report`: the self-contained HTML reports they write.

``gradcam diagnose failures|adversarial|bias`` (:mod:`gradcam.cli.diagnose`) runs them.
"""

from gradcam.diagnose.adversarial import AttackResult, attack, diagnose_adversarial
from gradcam.diagnose.bias import Bias, RegionStat, diagnose_bias, mean_interval, summarize_bias
from gradcam.diagnose.failures import Failures, diagnose_failures, write_failures_report

__all__ = [
    "AttackResult",
    "Bias",
    "Failures",
    "RegionStat",
    "attack",
    "diagnose_adversarial",
    "diagnose_bias",
    "diagnose_failures",
    "mean_interval",
    "summarize_bias",
    "write_failures_report",
]
