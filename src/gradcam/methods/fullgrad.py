"""FullGrad (Srinivas and Fleuret 2019): the input-gradient plus every bias-gradient.

A ReLU network's output is exactly ``f(x) = grad_x f(x) . x + sum_b grad_b f(x) . b`` (the
full-gradient decomposition, eq. 2): the input-gradient term and one term per bias. FullGrad
shows all of them as one saliency map at the input's resolution.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from gradcam.engine import all_finite, check_input, eval_mode, spatial_size
from gradcam.errors import GradCAMError, TargetError
from gradcam.hooks import capture_outputs
from gradcam.maps import normalize, upsample
from gradcam.methods.base import check_module
from gradcam.methods.registry import Needs, register
from gradcam.methods.results import FullGradResult
from gradcam.targets import TargetLike, as_logits, class_names, resolve_targets

__all__ = ["FullGrad", "PostProcess", "bias_layers", "rescale"]

PostProcess = Literal["abs", "relu"]
_POSTS = ("abs", "relu")

RESCALE_EPS = 1e-7
"""The epsilon of :func:`rescale`'s division (pytorch-grad-cam's ``scale_cam_image``)."""


def rescale(maps: Tensor, rank: int = 2) -> Tensor:
    """Rescale each (h, w) map to [0, 1]: ``(m - min m) / (max(m - min m) + 1e-7)``; the maps'
    last ``rank`` dims are their positions (1 for signals, 3 for volumes and clips).

    FullGrad's rescaling of every gradient map before they are summed; unlike
    :func:`gradcam.maps.normalize` it divides with an epsilon, as pytorch-grad-cam does.

    Examples:
        >>> rescale(torch.tensor([[[2.0, 4.0]]]))
        tensor([[[0., 1.]]])
    """
    axes = tuple(range(maps.dim() - rank, maps.dim()))
    shifted = maps - maps.amin(dim=axes, keepdim=True)
    return shifted / (shifted.amax(dim=axes, keepdim=True) + RESCALE_EPS)


_CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_NORMS: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def bias_layers(module: nn.Module, rank: int = 2) -> list[tuple[str, nn.Module, Tensor]]:
    """``(name, layer, bias)`` of every ``Conv2d`` and ``BatchNorm2d`` with a bias, in module order
    (``Conv1d``/``BatchNorm1d`` for ``rank`` 1, signals; ``Conv3d``/``BatchNorm3d`` for 3).

    A convolution's bias is its ``bias``; a batch norm's is the bias it adds in eval mode,
    ``beta - mu gamma / sqrt(sigma^2 + eps)`` from its running statistics (batch norms without
    running statistics have no fixed bias and are left out). Biases are detached, float32.

    Examples:
        >>> no_bias = nn.Conv2d(4, 4, 1, bias=False)
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), no_bias)
        >>> [name for name, _, _ in bias_layers(net)]
        ['0', '1']
    """
    found = []
    for name, layer in module.named_modules():
        bias: Tensor | None = None
        if isinstance(layer, _NORMS[rank]):
            assert isinstance(layer, nn.modules.batchnorm._BatchNorm)
            if layer.running_mean is None or layer.running_var is None:
                continue
            mean, var = layer.running_mean.float(), layer.running_var.float()
            gamma = torch.ones_like(mean) if layer.weight is None else layer.weight.float()
            beta = torch.zeros_like(mean) if layer.bias is None else layer.bias.float()
            bias = beta - mean * gamma / torch.sqrt(var + layer.eps)
        elif isinstance(layer, _CONVS[rank]) and isinstance(layer.bias, Tensor):
            bias = layer.bias.float()
        if bias is not None:
            found.append((name, layer, bias.detach()))
    return found


def _post(maps: Tensor, post: PostProcess) -> Tensor:
    return maps.abs() if post == "abs" else torch.relu(maps)


@register(
    "fullgrad",
    title="FullGrad",
    kind="heatmap",
    needs=Needs(
        forwards="per target a backward pass to the input and every bias layer (its own pass, "
        "not shared)"
    ),
    citation="Srinivas and Fleuret 2019",
    ranks=(1, 2, 3),
)
class FullGrad:
    """FullGrad saliency (Srinivas and Fleuret, "Full-Gradient Representation for Neural
    Network Visualization", NeurIPS 2019, eq. 4):

    .. math::
        S^c(x) = \\sum_{\\text{channels}} \\psi\\big(\\nabla_x y^c \\odot x\\big)
        + \\sum_{l} \\sum_{\\text{channels}}
          \\mathrm{up}\\Big(\\psi\\big(\\nabla_{z_l} y^c \\odot b_l\\big)\\Big)

    where ``z_l`` is the output of layer ``l`` with bias ``b_l`` (every ``Conv2d`` and
    ``BatchNorm2d``, see :func:`bias_layers`), ``psi`` is ``|.|`` followed by :func:`rescale`
    of every channel map to [0, 1], and ``up`` upsamples bilinearly to the input size. The map
    has the input's resolution and needs no layer. ``raw`` is ``S^c``; ``maps`` its min-max
    normalization. In 1-D and 3-D (signals, volumes, clips) the same sum runs over the
    ``Conv1d``/``BatchNorm1d`` or ``Conv3d``/``BatchNorm3d`` layers, upsampled linearly or
    trilinearly.

    As pytorch-grad-cam's ``FullGrad``, every channel map is rescaled on its own (the authors'
    code rescales each layer's maps together) and each layer's channels are summed (bilinear
    upsampling is linear, so summing before upsampling, as here, is the same map). Its raw
    output, before the final normalization, is ``raw``.

    One call runs its own forward pass and, per target, one backward pass to the input and to
    the outputs of every bias layer (kept by :func:`gradcam.hooks.capture_outputs`); parameter
    gradients are never touched and the model is left as it was.

    Args:
        module: the model.
        post: ``psi``'s first step: ``"abs"`` (the paper) or ``"relu"`` (positive evidence
            only, which pytorch-grad-cam's comments suggest may work better).

    Examples:
        >>> result = FullGrad(model)(x, gradcam.TopK(2))
        >>> result.raw.shape  # (B, K, H, W): at the input's resolution
        torch.Size([1, 2, 128, 128])
        >>> result.layers[:2]  # the bias layers whose gradients it sums
        ('features.bn1', 'features.bn2')
    """

    def __init__(self, module: nn.Module, *, post: PostProcess = "abs") -> None:
        if post not in _POSTS:
            raise GradCAMError(f"post must be one of {', '.join(_POSTS)}; got {post!r}")
        self.module = check_module(module)
        self.post: PostProcess = post

    def __call__(self, x: Tensor, targets: TargetLike | None = None) -> FullGradResult:
        """Explain ``targets`` (default: the top-1 class) for the (B, C, H, W) batch ``x``."""
        x = check_input(x, self.module)
        batch, size = x.shape[0], spatial_size(x)
        layers = bias_layers(self.module, len(size))
        biases = {name: bias.to(x.device) for name, _, bias in layers}
        grad_mode = torch.is_grad_enabled()
        with torch.inference_mode(False):
            try:
                torch.set_grad_enabled(True)
                source = (x.clone() if x.is_inference() else x).detach().requires_grad_(True)
                watched = [(layer, name) for name, layer, _ in layers]
                with eval_mode(self.module), capture_outputs(watched) as outputs:
                    output = self.module(source)
                resolved = resolve_targets(targets, output, batch, names=class_names(self.module))
                scores = resolved.scores
                if not all_finite(scores.detach()):
                    raise GradCAMError("the model produced NaN or infinite target scores")
                if not scores.requires_grad:
                    raise TargetError("the target scores do not depend on the input")
                wrt = [source, *(out for _, out in outputs)]
                raw = x.new_zeros((batch, scores.shape[1], *size), dtype=torch.float32)
                for k in range(scores.shape[1]):
                    grads = torch.autograd.grad(
                        scores[:, k].sum(),
                        wrt,
                        retain_graph=k < scores.shape[1] - 1,
                        allow_unused=True,
                    )
                    raw[:, k] = self._saliency(source, grads, [n for n, _ in outputs], biases)
                try:
                    logits: Tensor | None = as_logits(output).detach().float()
                except TargetError:
                    logits = None
            finally:
                torch.set_grad_enabled(grad_mode)
        if not all_finite(raw):
            raise GradCAMError("FullGrad's gradients contain NaN or infinite values")
        return FullGradResult(
            maps=normalize(raw, len(size)),
            scores=scores.detach().float(),
            classes=resolved.classes.detach(),
            logits=logits,
            raw=raw,
            layers=tuple(name for name, _ in outputs),
        )

    def _saliency(
        self,
        source: Tensor,
        grads: tuple[Tensor | None, ...],
        names: list[str],
        biases: dict[str, Tensor],
    ) -> Tensor:
        """``S^c`` (B, H, W) of one target from its gradients to the input and the layers."""
        size = spatial_size(source)
        rank = len(size)
        input_grad = grads[0]
        if input_grad is None:
            total = source.new_zeros((source.shape[0], *size), dtype=torch.float32)
        else:
            product = input_grad.detach().float() * source.detach().float()
            total = rescale(_post(product, self.post), rank).sum(dim=1)
        for name, grad in zip(names, grads[1:], strict=True):
            if grad is None or grad.dim() != source.dim():
                continue
            bias = biases[name].view(1, -1, *(1,) * rank)
            term = rescale(_post(grad.detach().float() * bias, self.post), rank).sum(dim=1)
            total = total + (term if tuple(term.shape[1:]) == size else upsample(term, size))
        return total
