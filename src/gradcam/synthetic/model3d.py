"""Two tiny 3-D CNNs for the volumetric and video benchmarks, with shipped weights.

:class:`Net3d` is :class:`~gradcam.synthetic.ShapeNet`'s design in 3-D: conv 3x3x3 -
BatchNorm - ReLU layers, then 1x1x1 ones, global average pooling and one linear layer
``classifier`` (CAM's head, so CAM, Grad-CAM and the localization protocol apply), with the
last ReLU ``features.final_relu`` not in-place. Two instances are shipped:

* ``shapes3d`` (:func:`shapes3d_net`): names the :data:`~gradcam.synthetic.volumes.SOLIDS`
  of (1, 32, 32, 32) volumes; maps at ``features.final_relu`` are 32 x 8 x 8 x 8;
* ``motion`` (:func:`motion_net`): names the :data:`~gradcam.synthetic.clips.DIRECTIONS`
  of (1, 8, 32, 32) clips; its first convolution does not stride in time, so maps are
  32 x 8 x 16 x 16 (a frame of the map per frame of the clip).

Both take their inputs as the generators make them (values about 0 to 1): no normalization.
The weights in ``gradcam/data`` were made by ``scripts/train_volumes.py`` and
``scripts/train_clips.py``.

Examples:
    >>> shapes3d_net()(torch.zeros(2, 1, 32, 32, 32)).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

from gradcam.synthetic.clips import DIRECTIONS
from gradcam.synthetic.volumes import SOLIDS

__all__ = [
    "MOTION_WEIGHTS",
    "NET3D_LAYER",
    "SHAPES3D_WEIGHTS",
    "Net3d",
    "load_net3d",
    "motion_net",
    "shapes3d_net",
]

_DATA = Path(__file__).resolve().parent.parent / "data"
SHAPES3D_WEIGHTS: Path = _DATA / "shapes3d_cnn.pt"
"""The shipped ``shapes3d`` state dict (float32)."""
MOTION_WEIGHTS: Path = _DATA / "motion_cnn.pt"
"""The shipped ``motion`` state dict (float32)."""

NET3D_LAYER = "features.final_relu"
"""The last spatial layer: the default Grad-CAM layer ``A`` of both nets."""

_CHANNELS = 32  # of the last feature maps


class Net3d(nn.Module):
    """A small GAP CNN for (B, 1, D, H, W) volumes or (B, 1, T, H, W) clips.

    Three conv 3x3x3 - BatchNorm - ReLU layers (8, 16, 32 channels; the first with stride
    ``stride``; with ``pool``, a 2x2x2 max-pool ``features.pool2`` after the second), then
    one 1x1x1 layer (32 channels) ``features.final_relu``, global average pooling and
    ``classifier``.

    Args:
        num_classes: outputs of ``classifier``.
        stride: the first convolution's stride per axis: ``(2, 2, 2)`` halves a volume,
            ``(1, 2, 2)`` keeps a clip's frames.
        pool: max-pool after the second layer (a receptive field of 17 voxels instead of 11,
            at an eighth of the third layer's cost).

    Examples:
        >>> Net3d(4, (1, 2, 2)).features(torch.zeros(1, 1, 8, 32, 32)).shape
        torch.Size([1, 32, 8, 16, 16])
    """

    def __init__(
        self, num_classes: int, stride: tuple[int, int, int] = (2, 2, 2), pool: bool = False
    ) -> None:
        super().__init__()
        layout: tuple[tuple[int, int, int, int | tuple[int, int, int]], ...] = (
            (1, 8, 3, stride),
            (8, 16, 3, 1),
            (16, _CHANNELS, 3, 1),
            (_CHANNELS, _CHANNELS, 1, 1),
        )
        layers: list[tuple[str, nn.Module]] = []
        for index, (c_in, c_out, kernel, step) in enumerate(layout, start=1):
            last = index == len(layout)
            conv = nn.Conv3d(c_in, c_out, kernel, stride=step, padding=kernel // 2, bias=False)
            layers += [
                (f"conv{index}", conv),
                (f"bn{index}", nn.BatchNorm3d(c_out)),
                ("final_relu" if last else f"relu{index}", nn.ReLU(inplace=not last)),
            ]
            if pool and index == 2:
                layers.append(("pool2", nn.MaxPool3d(2)))
        self.features = nn.Sequential(OrderedDict(layers))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.classifier = nn.Linear(_CHANNELS, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores (B, num_classes) of a (B, 1, D, H, W) batch."""
        return self.classifier(self.pool(self.features(x)).flatten(1))  # type: ignore[no-any-return]


def shapes3d_net() -> Net3d:
    """The ``shapes3d`` architecture (random weights): 4 solids, stride 2 on every axis and a
    max-pool, so (1, 32, 32, 32) volumes give 32 x 8 x 8 x 8 maps (a cell per 4 voxels, as
    :class:`~gradcam.synthetic.ShapeNet` has a cell per 8 of its 128 pixels)."""
    return Net3d(len(SOLIDS), (2, 2, 2), pool=True)


def motion_net() -> Net3d:
    """The ``motion`` architecture (random weights): 4 directions, no stride in time."""
    return Net3d(len(DIRECTIONS), (1, 2, 2))


def load_net3d(name: str, weights: str | Path | None = None) -> Net3d:
    """``"shapes3d"`` or ``"motion"`` with the shipped weights (or those of ``weights``), in
    eval mode.

    Examples:
        >>> from gradcam.synthetic.volumes import make_volume
        >>> model = load_net3d("shapes3d")
        >>> SOLIDS[int(model(torch.from_numpy(make_volume(1, solid="torus").array[None])).argmax())]
        'torus'
    """
    model = shapes3d_net() if name == "shapes3d" else motion_net()
    default = SHAPES3D_WEIGHTS if name == "shapes3d" else MOTION_WEIGHTS
    state = torch.load(Path(weights or default), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
