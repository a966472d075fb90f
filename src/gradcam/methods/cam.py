"""Class Activation Mapping (Zhou et al. 2016), which Grad-CAM generalizes (section 3.1)."""

from __future__ import annotations

from contextlib import ExitStack

import torch
from torch import Tensor, nn

from gradcam.engine import check_input, eval_mode, spatial_size
from gradcam.errors import GradCAMError, TargetError
from gradcam.hooks import capture_input, capture_layer
from gradcam.layers import LayerLike, resolve_layer
from gradcam.maps import normalize, upsample
from gradcam.methods.gradcam import LayerMethod
from gradcam.methods.registry import Needs, register
from gradcam.methods.results import CAMResult
from gradcam.targets import TargetLike, as_logits, class_names, resolve_targets

__all__ = ["CAM"]


@register(
    "cam",
    title="CAM",
    kind="heatmap",
    needs=Needs(layer=True, forwards="one no-grad forward pass"),
    citation="Zhou et al. 2016",
    ranks=(1, 2, 3),
)
class CAM(LayerMethod):
    """Class Activation Mapping for models whose head is global average pooling then a linear
    layer, ``Y^c = sum_k w_k^c (1/Z) sum_ij A^k_ij`` (eq. 3):

    ``M^c = ReLU(sum_k w_k^c A^k)``

    (the ReLU, as in Grad-CAM's eq. 2, keeps the positive evidence; ``relu=False`` gives the
    original signed map). By section 3.1, Grad-CAM's weights are ``w_k^c / Z`` on such models.

    The linear layer is found automatically (the last ``nn.Linear`` whose input size is the
    layer's channel count) or named with ``fc``. Every call checks that the linear layer's input
    really is the spatial mean of ``A``; models with another head get a clear error. CAM needs
    one no-grad forward pass and explains class ids only. Signals and volumes or clips are
    explained as images (registry ``ranks=(1, 2, 3)``; ``Z`` counts every position).

    Args:
        module: the model.
        layer: the feature-map layer ``A`` (default: the last convolutional feature maps), as
            for :class:`~gradcam.GradCAM` (a reshaped layer, like Swin's channels-last ``norm``,
            works when the head averages it).
        fc: the linear layer (module or dotted name).
        relu: keep only positive evidence.

    Examples:
        >>> result = CAM(model)(x, gradcam.TopK(2))
        >>> result.classes, result.weights.shape  # (B, K, C)
        (tensor([[3, 4]]), torch.Size([1, 2, 128]))
        >>> torch.equal(result.weights[0], model.classifier.weight[[3, 4]])  # the fc weights
        True
    """

    def __init__(
        self,
        module: nn.Module,
        layer: LayerLike | None = None,
        fc: nn.Module | str | None = None,
        *,
        relu: bool = True,
    ) -> None:
        super().__init__(module, layer)
        self._fc = None if fc is None else resolve_layer(module, fc)
        if self._fc is not None and not isinstance(self._fc[0], nn.Linear):
            raise GradCAMError(f"fc {self._fc[1]!r} is not an nn.Linear layer")
        self.relu = relu

    def _candidates(self) -> list[tuple[nn.Module, str]]:
        if self._fc is not None:
            return [(self._fc.module, self._fc.name)]
        return [(m, n) for n, m in self.module.named_modules() if isinstance(m, nn.Linear)]

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> CAMResult:
        """Explain class ``targets`` (default: the top-1 class) for the batch ``x``."""
        x = check_input(x, self.module)
        layer = self.layer_for(x)
        layer_name = layer.name
        candidates = self._candidates()
        with ExitStack() as stack:
            # inference_mode(False) turns grad mode on, so no_grad comes after it.
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.no_grad())
            stack.enter_context(eval_mode(self.module))
            features = stack.enter_context(capture_layer(layer.module, layer_name, detach=False))
            inputs = [stack.enter_context(capture_input(m, n)) for m, n in candidates]
            output = self.module(x)
        if features.output is None:
            raise GradCAMError(f"layer {layer_name!r} did not run during the forward pass")
        raw = features.output
        activations = layer.view(self.module, tuple(raw.shape), spatial_size(x))(raw)
        channels = activations.shape[1]
        matching = [
            (module, capture)
            for (module, _), capture in zip(candidates, inputs, strict=True)
            if isinstance(module, nn.Linear) and module.in_features == channels
        ]
        if not matching:
            raise GradCAMError(
                f"CAM needs a linear layer with {channels} inputs after global average pooling "
                f"of {layer_name!r}; this model has none (use GradCAM, which works for any head)"
            )
        fc, pooled_capture = matching[-1]
        pooled = pooled_capture.input
        mean = activations.float().mean(dim=tuple(range(2, activations.dim())))
        if (
            pooled is None
            or pooled.shape != mean.shape
            or not torch.allclose(pooled.float(), mean, rtol=1e-3, atol=1e-5)
        ):
            raise GradCAMError(
                f"CAM needs the input of {pooled_capture.name!r} to be the global average pooling "
                f"of {layer_name!r}, and it is not: this model's head is not GAP + linear "
                "(use GradCAM, which works for any head)"
            )
        resolved = resolve_targets(targets, output, x.shape[0], names=class_names(self.module))
        if bool((resolved.classes < 0).any()):
            raise TargetError("CAM explains class ids only, not callable targets")
        weights = fc.weight.detach().float()[resolved.classes]  # (B, K, C)
        cam = torch.einsum("bkc,bc...->bk...", weights, activations.float())
        raw = torch.relu(cam) if self.relu else cam
        return CAMResult(
            raw=raw,
            maps=normalize(upsample(raw, spatial_size(x)), x.dim() - 2),
            weights=weights,
            scores=resolved.scores.detach().float(),
            classes=resolved.classes,
            logits=as_logits(output).detach().float(),
            layer=layer_name,
        )
