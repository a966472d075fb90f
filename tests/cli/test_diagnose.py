"""gradcam.cli.diagnose: its dataset commands read the options every dataset command shares."""

from __future__ import annotations

import pytest

from gradcam.cli import build_parser
from gradcam.evaluate.datasets import SYNTHETIC_IMAGES

RUNNER = {"limit": None, "resume": False, "batch_size": 8, "workers": 1, "ray": False}


@pytest.mark.parametrize("job", ["failures", "bias"])
def test_dataset_jobs_share_evaluate_defaults_and_runner_options(job: str) -> None:
    parser = build_parser()
    diagnosed = vars(parser.parse_args(["diagnose", job, "synthetic"]))
    evaluated = vars(parser.parse_args(["evaluate", "localization", "--data", "synthetic"]))
    assert diagnosed["synthetic_images"] == evaluated["synthetic_images"] == SYNTHETIC_IMAGES
    for key in ("format", "labels", "boxes", "annotations", "split", "seed", *RUNNER):
        assert diagnosed[key] == evaluated[key], key
    assert {k: diagnosed[k] for k in RUNNER} == RUNNER
    ray = parser.parse_args(["diagnose", job, "synthetic", "--workers", "2", "--ray", "auto"])
    assert (ray.workers, ray.ray) == (2, "auto")
