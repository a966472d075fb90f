"""pytorch-grad-cam's ``pytorch_grad_cam.feature_factorization.deep_feature_factorization``:
Deep Feature Factorization by gradcam's :func:`~gradcam.methods.factorization.factorize_features`
(the factorization of gradcam's ``dff`` method) on the layer's features."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gradcam.compat.pytorch_grad_cam.base_cam import scale_maps
from gradcam.compat.pytorch_grad_cam.utils.image import (
    create_labels_legend,
    show_factorization_on_image,
)
from gradcam.errors import GradCAMError
from gradcam.layers import Layer, resolve_layer
from gradcam.methods.activation import layer_pass
from gradcam.methods.factorization import factorize_features

__all__ = ["DeepFeatureFactorization", "run_dff_on_image"]


def _first_score(output: Any) -> Tensor:
    """A target that any output has: the features are what DFF reads, not a class score."""
    first = output if isinstance(output, Tensor) else next(iter(vars(output).values()))
    return torch.zeros(first.shape[0], device=first.device)


class DeepFeatureFactorization:
    """Deep Feature Factorization (Collins et al. 2018) with pytorch-grad-cam's interface:
    ``DeepFeatureFactorization(model, target_layer, reshape_transform=None,
    computation_on_concepts=None)``, called as ``dff(input_tensor, n_components=16)``.

    The batch's features at ``target_layer`` (after ``reshape_transform``), a (C, B*h*w)
    matrix shifted by each channel's minimum ``o``, are factorized ``A - o ~ W H`` (scikit-learn's
    NMF, random start seed 0, as pytorch-grad-cam). Returns ``(concepts, explanations)``:
    ``concepts`` (C, n) = ``W + o``, and per image an (n, H, W) float32 array of the concepts'
    maps ``H`` scaled to [0, 1] and resized to the input; with ``computation_on_concepts``
    (a classifier head, say), also its (n, N) output on the (n, C) concepts.

    Examples:
        >>> from gradcam.compat.pytorch_grad_cam import DeepFeatureFactorization
        >>> concepts, maps = DeepFeatureFactorization(model, model.features)(x, 4)
        >>> concepts.shape, maps[0].shape
        ((128, 4), (4, 128, 128))
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module,
        reshape_transform: Callable[[Any], Any] | None = None,
        computation_on_concepts: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.model = model
        self.computation_on_concepts = computation_on_concepts
        self.layer = resolve_layer(
            model,
            Layer(
                target_layer, "channels-first" if reshape_transform is None else reshape_transform
            ),
        )

    def __call__(
        self, input_tensor: Tensor, n_components: int = 16
    ) -> tuple[np.ndarray, list[np.ndarray]] | tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """The concepts, each image's concept maps, and the concepts' scores (see above)."""
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            raise GradCAMError(f"n_components must be a positive integer, got {n_components!r}")
        device = next(self.model.parameters()).device
        x = input_tensor.to(device)
        found = layer_pass(self.model, self.layer, x, [_first_score])
        activations = torch.nan_to_num(found.activations.float(), nan=0.0)
        if activations.dim() != 4:
            raise GradCAMError(
                f"DeepFeatureFactorization factorizes (B, C, h, w) maps; layer {found.layer!r} "
                f"gives {tuple(activations.shape)}"
            )
        factorization = factorize_features(activations, n_components)
        size = (x.shape[-2], x.shape[-1])
        explanations = [scale_maps(maps, size).numpy() for maps in factorization.maps]
        concepts = factorization.embeddings.T.numpy()
        if self.computation_on_concepts is None:
            return concepts, explanations
        with torch.no_grad():
            embeddings = factorization.embeddings.to(device)
            outputs = self.computation_on_concepts(embeddings).cpu().numpy()
        return concepts, explanations, outputs

    def __enter__(self) -> DeepFeatureFactorization:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def run_dff_on_image(
    model: nn.Module,
    target_layer: nn.Module,
    classifier: Callable[[Tensor], Tensor],
    img_pil: Any,
    img_tensor: Tensor,
    reshape_transform: Callable[[Any], Any] | None = None,
    n_components: int = 5,
    top_k: int = 2,
) -> np.ndarray:
    """pytorch-grad-cam's one-image DFF picture: the image beside its concepts' overlay
    (:func:`~gradcam.compat.pytorch_grad_cam.utils.image.show_factorization_on_image`,
    ``image_weight=0.3``), each concept labelled with the ``top_k`` classes of
    ``softmax(classifier(concept))``, named by ``model.config.id2label`` (a Hugging Face
    model's labels) or, without them, by class id.

    Examples:
        >>> from PIL import Image
        >>> from gradcam.compat.pytorch_grad_cam import run_dff_on_image
        >>> picture = run_dff_on_image(model, model.features, model.classifier,
        ...                            Image.new("RGB", (128, 128)), x[0], n_components=2)
        >>> picture.shape  # image, overlay, legend
        (128, 384, 3)
    """
    rgb = np.array(img_pil) / 255
    dff = DeepFeatureFactorization(model, target_layer, reshape_transform, classifier)
    _, explanations, scores = dff(img_tensor[None], n_components)  # type: ignore[misc]
    probabilities = torch.softmax(torch.from_numpy(scores), dim=-1).numpy()
    config = getattr(model, "config", None)
    labels = getattr(config, "id2label", None) or {i: str(i) for i in range(probabilities.shape[1])}
    legend = create_labels_legend(probabilities, labels=labels, top_k=top_k)
    overlay = show_factorization_on_image(
        rgb, explanations[0], image_weight=0.3, concept_labels=legend
    )
    return np.hstack((np.array(img_pil), overlay))
