"""The embedded pretrained EfficientNet-Lite0 on real photos (scikit-image, matplotlib)."""

from __future__ import annotations

import pytest
import torch
from helpers.photos import CAT_CLASSES, ESPRESSO, GRACE_HOPPER, cat_and_coffee, photo

import gradcam
from gradcam.explain import explain_image


@pytest.fixture(scope="module")
def two_objects(lite0: gradcam.LoadedModel) -> tuple[gradcam.CAMResult, int, int, int]:
    """Grad-CAM and counterfactual maps of espresso and the best cat class on cat | coffee."""
    image, split = cat_and_coffee()
    x = lite0.preprocess(image)
    logits = lite0.module(x).detach()[0]
    cat = max(CAT_CLASSES, key=lambda c: float(logits[c]))
    result = gradcam.GradCAM(lite0.module, lite0.default_layer)(x, [ESPRESSO, cat])
    split_x = round(split * x.shape[-1] / image.width)
    return result, cat, split_x, x.shape[-1]


def _peak_x(m: torch.Tensor) -> int:
    return gradcam.peak(m)[0]


def test_both_objects_are_among_the_top_predictions(
    lite0: gradcam.LoadedModel, two_objects: tuple[gradcam.CAMResult, int, int, int]
) -> None:
    result, cat, _, _ = two_objects
    assert result.logits is not None
    top5 = result.logits[0].topk(5).indices.tolist()
    assert ESPRESSO in top5 and cat in top5


def test_each_class_map_peaks_on_its_own_object(
    two_objects: tuple[gradcam.CAMResult, int, int, int],
) -> None:
    result, _, split, _ = two_objects
    espresso_map, cat_map = result.maps[0, 0], result.maps[0, 1]
    assert _peak_x(espresso_map) > split
    assert _peak_x(cat_map) < split
    # Most of each map's mass lies on its own object.
    assert espresso_map[:, split:].sum() > 2 * espresso_map[:, :split].sum()
    assert cat_map[:, :split].sum() > 2 * cat_map[:, split:].sum()


def test_counterfactual_does_not_peak_on_the_object(lite0: gradcam.LoadedModel) -> None:
    image, split = cat_and_coffee()
    x = lite0.preprocess(image)
    split_x = round(split * x.shape[-1] / image.width)
    counter = gradcam.GradCAM(lite0.module, counterfactual=True)(x, [ESPRESSO, 285])
    assert _peak_x(counter.maps[0, 0]) < split_x  # espresso's counter-evidence: the cat
    assert _peak_x(counter.maps[0, 1]) > split_x  # the cat's counter-evidence: the coffee


def test_explain_image_reports_original_pixels(lite0: gradcam.LoadedModel) -> None:
    image, split = cat_and_coffee()
    found = explain_image(lite0, image, classes=[ESPRESSO], methods=["gradcam", "counterfactual"])
    espresso = found.entries[0]
    assert espresso.class_name == "espresso" and espresso.method == "gradcam"
    assert espresso.peak is not None and espresso.box is not None
    assert split < espresso.peak[0] < image.width and 0 <= espresso.peak[1] < image.height
    x0, y0, x1, y1 = espresso.box
    assert split - 30 <= x0 < x1 < image.width and 0 <= y0 < y1 < image.height
    assert [e.method for e in found.entries] == ["gradcam", "counterfactual"]
    assert found.predictions[0]["name"] in {"espresso", "Egyptian cat", "tabby", "tiger cat"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("chelsea.png", CAT_CLASSES),
        ("coffee.png", {ESPRESSO}),
        ("motorcycle_left.png", {665, 670}),  # moped, motor scooter
    ],
)
def test_single_photos_are_recognized(
    lite0: gradcam.LoadedModel, name: str, expected: set[int]
) -> None:
    x = lite0.preprocess(photo(name))
    result = gradcam.GradCAM(lite0.module)(x)
    assert int(result.classes[0, 0]) in expected
    assert torch.isfinite(result.maps).all() and float(result.maps.max()) == 1.0


def test_grace_hopper_uniform_map_is_on_her(lite0: gradcam.LoadedModel) -> None:
    image = gradcam.load_image(GRACE_HOPPER)
    x = lite0.preprocess(image)
    result = gradcam.GradCAM(lite0.module)(x, lite0.class_index("military uniform"))
    _, y0, _, y1 = gradcam.bounding_box(result.maps[0, 0])
    # The uniform is the lower half of the portrait, not the background at the top.
    assert (y0 + y1) / 2 > x.shape[-2] * 0.4


def test_overlay_keeps_original_size(lite0: gradcam.LoadedModel) -> None:
    image, _ = cat_and_coffee()
    result = gradcam.GradCAM(lite0.module)(lite0.preprocess(image))
    picture = gradcam.overlay(image, result.raw[0, 0], box=(10, 10, 100, 100))
    assert picture.size == image.size and picture.mode == "RGB"
    assert picture.getpixel((10, 50)) == (0, 255, 0)  # the box outline


@pytest.fixture(scope="module")
def guided(lite0: gradcam.LoadedModel) -> tuple[gradcam.GuidedCAMResult, int]:
    image, split = cat_and_coffee()
    x = lite0.preprocess(image)
    result = gradcam.GuidedGradCAM(lite0.module)(x, [ESPRESSO, 285])
    return result, round(split * x.shape[-1] / image.width)


def _coffee_share(pixel_map: torch.Tensor, split: int) -> float:
    mass = pixel_map.abs().sum(dim=0)
    return float(mass[:, split:].sum() / mass.sum())


def test_guided_gradcam_mass_is_on_the_explained_object(
    guided: tuple[gradcam.GuidedCAMResult, int],
) -> None:
    result, split = guided
    assert _coffee_share(result.maps[0, 0], split) > 0.9  # espresso: on the coffee
    assert _coffee_share(result.maps[0, 1], split) < 0.1  # Egyptian cat: on the cat


def test_guided_backprop_alone_discriminates_less(
    guided: tuple[gradcam.GuidedCAMResult, int],
) -> None:
    """The paper's Fig. 1 point: Guided Backprop highlights both objects for either class."""
    result, split = guided
    gap_ggc = _coffee_share(result.maps[0, 0], split) - _coffee_share(result.maps[0, 1], split)
    gap_gb = _coffee_share(result.gradients[0, 0], split) - _coffee_share(
        result.gradients[0, 1], split
    )
    assert gap_ggc > 2 * gap_gb
    cosine = torch.nn.functional.cosine_similarity
    gb, ggc = result.gradients[0], result.maps[0]
    assert cosine(gb[0].flatten(), gb[1].flatten(), dim=0) > 0.5
    assert cosine(ggc[0].flatten(), ggc[1].flatten(), dim=0) < 0.2


def test_relu6_of_the_embedded_model_is_guided(lite0: gradcam.LoadedModel) -> None:
    """EfficientNet-Lite0's activations are nn.ReLU6: ours guides them, Captum does not."""
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    leaf = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(lite0.module(leaf)[0, ESPRESSO], leaf)
    ours = gradcam.GuidedBackprop(lite0.module)(x, ESPRESSO).maps[0, 0]
    assert not torch.allclose(ours, plain[0], atol=1e-6)
    captum_attr = pytest.importorskip("captum.attr")
    theirs = captum_attr.GuidedBackprop(lite0.module).attribute(x, target=ESPRESSO)[0]
    torch.testing.assert_close(theirs, plain[0], rtol=1e-4, atol=1e-6)  # left unguided
