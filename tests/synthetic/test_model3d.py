"""The shipped 3-D nets: loaded by name, their layer and classes, and their accuracy on
benchmark samples they never saw (seed 2; training used its own stream, held-out seed 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gradcam
from gradcam.errors import ModelLoadError
from gradcam.synthetic.clips import DIRECTIONS, benchmark_clip
from gradcam.synthetic.model3d import Net3d, load_net3d, motion_net, shapes3d_net
from gradcam.synthetic.volumes import SOLIDS, benchmark_volume


def test_loaded_by_name() -> None:
    shapes3d = gradcam.load_model("shapes3d")
    motion = gradcam.load_model("motion")
    assert shapes3d.class_names == SOLIDS and motion.class_names == DIRECTIONS
    assert shapes3d.default_layer == motion.default_layer == "features.final_relu"
    assert shapes3d.pretrained and motion.pretrained
    assert {"shapes3d", "motion"} <= set(gradcam.models.available_models())
    with pytest.warns(UserWarning, match="random weights"):
        assert not gradcam.load_model("motion", "random").pretrained


def test_bad_weights_file_is_one_line(tmp_path: object) -> None:
    path = f"{tmp_path}/other.pt"
    torch.save({"classifier.weight": torch.zeros(3, 32)}, path)
    with pytest.raises(ModelLoadError, match="does not fit motion"):
        gradcam.load_model("motion", path)


def test_map_shapes() -> None:
    assert shapes3d_net().features(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 32, 8, 8, 8)
    assert motion_net().features(torch.zeros(1, 1, 8, 32, 32)).shape == (1, 32, 8, 16, 16)
    assert isinstance(load_net3d("motion"), Net3d)


def _accuracy(model: torch.nn.Module, arrays: list[np.ndarray], labels: list[int]) -> float:
    with torch.no_grad():
        predicted = model(torch.from_numpy(np.stack(arrays))).argmax(1)
    return float((predicted == torch.tensor(labels)).float().mean())


def test_motion_accuracy() -> None:
    clips = [benchmark_clip(i, seed=2) for i in range(40)]
    labels = [DIRECTIONS.index(c.direction) for c in clips]
    assert _accuracy(load_net3d("motion"), [c.array for c in clips], labels) >= 0.95
    # Random weights are at chance: the check can fail.
    torch.manual_seed(0)
    assert _accuracy(motion_net().eval(), [c.array for c in clips], labels) <= 0.5


def test_shapes3d_accuracy() -> None:
    volumes = [benchmark_volume(i, seed=2) for i in range(40)]
    labels = [SOLIDS.index(v.solid) for v in volumes]
    # 80.8% held-out when trained (120 volumes of seed 1); 75% (30 of 40) here.
    assert _accuracy(load_net3d("shapes3d"), [v.array for v in volumes], labels) >= 0.7
    torch.manual_seed(0)
    assert _accuracy(shapes3d_net().eval(), [v.array for v in volumes], labels) <= 0.5
