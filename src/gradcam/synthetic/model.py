"""ShapeNet: a small global-average-pooling CNN that names the shape of a synthetic scene.

Its head is the one CAM needs (Zhou et al.; Grad-CAM section 3.1): the last feature maps
``A`` (``features.final_relu``, 128 x 16 x 16 at 128 x 128 input) are averaged and fed to a
single linear layer ``classifier``, so CAM, Grad-CAM and the localization benchmark of
:mod:`gradcam.synthetic.scenes` all apply. The weights shipped in ``gradcam/data`` were made
by ``scripts/train_shapes.py``.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

from gradcam.images import Preprocess
from gradcam.synthetic.scenes import SHAPES

__all__ = [
    "SHAPES_LAYER",
    "SHAPES_MEAN",
    "SHAPES_PREPROCESS",
    "SHAPES_SIZE",
    "SHAPES_STD",
    "SHAPES_WEIGHTS",
    "ShapeNet",
    "load_shapes_model",
]

SHAPES_WEIGHTS: Path = Path(__file__).resolve().parent.parent / "data" / "shapes_cnn.pt"
"""The shipped ShapeNet state dict (float32)."""

SHAPES_SIZE = 128
"""Input side in pixels, the size of the training scenes."""

# Measured on 1000 random scenes: means 0.502, 0.500, 0.500; deviations 0.195, 0.184, 0.195.
SHAPES_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
"""Per-channel mean of the training scenes, on the [0, 1] scale."""

SHAPES_STD: tuple[float, float, float] = (0.19, 0.19, 0.19)
"""Per-channel standard deviation of the training scenes, on the [0, 1] scale."""

SHAPES_PREPROCESS = Preprocess(size=SHAPES_SIZE, mean=SHAPES_MEAN, std=SHAPES_STD)
"""The input transform of training: a 128 x 128 scene becomes a (1, 3, 128, 128) tensor."""

SHAPES_LAYER = "features.final_relu"
"""The last spatial layer: the default Grad-CAM layer ``A`` of :class:`ShapeNet`."""

# (name, input channels, output channels, kernel, stride) of each conv - BatchNorm - ReLU, in
# order; "poolN" is a 2x2 max-pool. A stride-2 first conv halves the cost of the
# full-resolution layers, which dominate training time on a CPU.
_CHANNELS = 128  # of the last feature maps, the classifier's input
_LAYOUT: tuple[tuple[str, int, int, int, int] | str, ...] = (
    ("1", 3, 32, 3, 2),
    ("2", 32, 32, 3, 1),
    "pool2",
    ("3a", 32, 64, 3, 1),
    ("3b", 64, 64, 3, 1),
    ("3c", 64, 64, 3, 1),
    "pool3",
    ("4a", 64, _CHANNELS, 1, 1),
    ("4b", _CHANNELS, _CHANNELS, 1, 1),
)


def _features() -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = []
    for index, spec in enumerate(_LAYOUT):
        if isinstance(spec, str):
            layers.append((spec, nn.MaxPool2d(2)))
            continue
        name, c_in, c_out, kernel, stride = spec
        last = index == len(_LAYOUT) - 1
        conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
        layers += [
            (f"conv{name}", conv),
            (f"bn{name}", nn.BatchNorm2d(c_out)),
            ("final_relu" if last else f"relu{name}", nn.ReLU(inplace=not last)),
        ]
    return nn.Sequential(OrderedDict(layers))


class ShapeNet(nn.Module):
    """A small GAP CNN for the :data:`~gradcam.synthetic.scenes.SHAPES` (0.13 M parameters).

    Five conv 3x3 - BatchNorm - ReLU layers (32, 32, 64, 64, 64 channels; the first with
    stride 2, a 2x2 max-pool after the second and the fifth), then two 1x1 ones (128
    channels), so a 128 x 128 input gives 128 x 16 x 16 maps at ``features.final_relu``; then
    global average pooling and one linear layer ``classifier``. The 1x1 layers at the end
    keep the receptive field of the maps small (of all layouts tried, this one localized
    best: Grad-CAM boxes with IoU >= 0.5 for 51% of held-out scenes, against 32% with a 3x3
    layer there). The last ReLU is not in-place, so hooks on it see a tensor that
    nothing later modifies.

    Examples:
        >>> model = ShapeNet()
        >>> model(torch.zeros(2, 3, 128, 128)).shape
        torch.Size([2, 8])
    """

    def __init__(self, num_classes: int = len(SHAPES)) -> None:
        super().__init__()
        self.features = _features()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(_CHANNELS, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores (B, num_classes) of a normalized (B, 3, H, W) batch."""
        return self.classifier(self.pool(self.features(x)).flatten(1))  # type: ignore[no-any-return]


def load_shapes_model(weights: str | Path = SHAPES_WEIGHTS) -> ShapeNet:
    """ShapeNet with the shipped weights (or those of ``weights``), in eval mode.

    Examples:
        >>> model = load_shapes_model()
        >>> from gradcam.synthetic import make_scene
        >>> x = SHAPES_PREPROCESS(make_scene(1, shapes=["cross"]).image)
        >>> SHAPES[int(model(x).argmax())]
        'cross'
    """
    model = ShapeNet()
    state = torch.load(Path(weights), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
