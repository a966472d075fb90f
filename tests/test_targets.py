"""Target resolution: every accepted form on hand-made outputs."""

from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import gradcam
from gradcam.engine import compute_gradients, input_channels
from gradcam.errors import GradCAMError, TargetError
from gradcam.targets import (
    ClassScore,
    TopK,
    as_logits,
    class_names,
    register_class_names,
    resolve_targets,
)


@pytest.fixture(scope="module")
def shapes() -> gradcam.LoadedModel:
    return gradcam.load_model("shapes")


LOGITS = torch.tensor([[1.0, 3.0, 2.0], [5.0, 4.0, 6.0]])


def test_default_is_top1() -> None:
    resolved = resolve_targets(None, LOGITS, 2)
    assert resolved.classes.tolist() == [[1], [2]]
    assert resolved.scores.tolist() == [[3.0], [6.0]]


def test_topk_is_per_image_best_first() -> None:
    assert resolve_targets(TopK(2), LOGITS, 2).classes.tolist() == [[1, 2], [2, 0]]


def test_int_and_list_are_the_same_for_every_image() -> None:
    assert resolve_targets(0, LOGITS, 2).scores.tolist() == [[1.0], [5.0]]
    resolved = resolve_targets([2, 0, 1], LOGITS, 2)
    assert resolved.classes.tolist() == [[2, 0, 1], [2, 0, 1]]
    assert resolved.scores.tolist() == [[2.0, 1.0, 3.0], [6.0, 5.0, 4.0]]


def test_tensor_ids_per_image() -> None:
    resolved = resolve_targets(torch.tensor([[0, 1], [2, 2]]), LOGITS, 2)
    assert resolved.scores.tolist() == [[1.0, 3.0], [6.0, 6.0]]
    assert resolve_targets(torch.tensor([[1]]), LOGITS, 2).classes.tolist() == [[1], [1]]


def test_callable_accepts_b1_shape() -> None:
    resolved = resolve_targets(lambda out: out[:, :1], LOGITS, 2)
    assert resolved.scores.tolist() == [[1.0], [5.0]]


def test_as_logits_forms() -> None:
    assert as_logits((LOGITS, "aux")) is LOGITS
    assert as_logits({"logits": LOGITS, "other": LOGITS * 2}) is LOGITS
    assert as_logits({"out": LOGITS}) is LOGITS
    with pytest.raises(TargetError, match="shape"):
        as_logits(torch.zeros(1, 3, 4, 4))
    with pytest.raises(TargetError, match="of type dict"):
        as_logits({"a": LOGITS, "b": LOGITS})


# Class ids of any integral type, class names, and everything else refused clearly (issue 18.2)


@pytest.mark.parametrize(
    "target",
    [np.int64(2), np.int32(2), np.uint8(2), torch.tensor(2), torch.tensor(2, dtype=torch.int8)],
    ids=["np.int64", "np.int32", "np.uint8", "0-d tensor", "0-d int8 tensor"],
)
def test_integral_scalars_are_class_ids(target: object) -> None:
    resolved = resolve_targets(target, LOGITS, 2)  # type: ignore[arg-type]
    assert resolved.classes.tolist() == [[2], [2]]
    assert resolved.scores.tolist() == [[2.0], [6.0]]


def test_argmax_output_is_a_list_of_ids() -> None:
    ids = np.argmax(LOGITS.numpy(), axis=1)  # array([1, 2]): what a numpy user has at hand
    with pytest.warns(UserWarning):
        resolved = resolve_targets(ids, LOGITS, 2)  # type: ignore[arg-type]
    assert resolved.classes.tolist() == [[1, 2], [1, 2]]
    resolved = resolve_targets([np.int64(0), torch.tensor(1)], LOGITS[:1], 1)
    assert resolved.scores.tolist() == [[1.0, 3.0]]


def test_class_names() -> None:
    names = ("tabby cat", "dog", "red fox")
    assert resolve_targets("dog", LOGITS, 2, names=names).scores.tolist() == [[3.0], [4.0]]
    resolved = resolve_targets(["fox", 0, "Tabby Cat"], LOGITS[:1], 1, names=names)
    assert resolved.classes.tolist() == [[2, 0, 0]]
    with pytest.raises(TargetError, match="no class named 'dgo'; did you mean 'dog'"):
        resolve_targets("dgo", LOGITS, 2, names=names)
    with pytest.raises(TargetError, match="needs a model with class names"):
        resolve_targets("dog", LOGITS, 2)


@pytest.mark.parametrize(
    "target",
    [1.5, np.float64(1.0), torch.tensor(1.0), True, [1, 2.5], {"a": 1}, b"x", object()],
    ids=["float", "np.float64", "float tensor", "bool", "list with float", "dict", "bytes", "obj"],
)
def test_other_targets_say_what_targets_may_be(target: object) -> None:
    with pytest.raises(TargetError, match="targets may be a class id"):
        resolve_targets(target, LOGITS, 2)  # type: ignore[arg-type]


def test_names_and_numpy_ids_through_a_method(shapes: gradcam.LoadedModel) -> None:
    """End to end: names resolve against the loaded model's names, numpy ids are ids."""
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    cam = gradcam.GradCAM(shapes.module)
    by_name = cam(x, "square")
    square = shapes.class_names.index("square")
    assert by_name.classes.tolist() == [[square], [square]]
    torch.testing.assert_close(by_name.raw, cam(x, np.int64(square)).raw)
    occlusion = gradcam.Occlusion(shapes.module, window=32, stride=32)
    assert occlusion(x[:1], ["circle", "square"]).classes.tolist() == [[0, square]]
    with pytest.raises(TargetError, match="no class named 'hexagon'"):
        cam(x, "hexagon")


def test_class_names_live_on_the_model_they_belong_to(shapes: gradcam.LoadedModel) -> None:
    """A loaded model gives its module its names; nothing else gets them."""
    assert vars(shapes.module)["_gradcam_class_names"] == shapes.class_names
    assert class_names(shapes.module) == shapes.class_names

    def head() -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
        )

    net, twin = head(), head()
    register_class_names(net, ["cat", "dog"])
    assert class_names(twin) is None and class_names(net[0]) is None
    assert class_names(copy.deepcopy(net)) == ("cat", "dog")  # a copy keeps them
    assert set(net.state_dict()) == set(twin.state_dict())  # not a buffer
    x = torch.rand(1, 3, 4, 4)
    with pytest.raises(TargetError, match="needs a model with class names"):
        gradcam.GradCAM(twin, "0")(x, "dog")
    assert gradcam.GradCAM(net, "0")(x, "dog").classes.tolist() == [[1]]


def test_hugging_face_id2label_names() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    net.config = SimpleNamespace(id2label={0: "cat", 1: "dog"})  # type: ignore[assignment]
    assert class_names(net) == ("cat", "dog")
    assert class_names(torch.nn.Linear(2, 2)) is None


# A list as long as the batch is most likely meant as one class per image (issue 18.3)


def test_list_as_long_as_the_batch_warns_naming_the_tensor_form() -> None:
    with pytest.warns(UserWarning, match=r"same 2 classes for every image.*\(2, 1\) tensor"):
        resolved = resolve_targets([0, 2], LOGITS, 2)
    assert resolved.classes.tolist() == [[0, 2], [0, 2]]  # the meaning is kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_targets([0, 2], LOGITS[:1], 1)  # B = 1: nothing to confuse
        resolve_targets([0, 1, 2], LOGITS, 2)
        resolve_targets(torch.tensor([[0], [2]]), LOGITS, 2)


def test_the_warning_comes_once_per_call(shapes: gradcam.LoadedModel) -> None:
    """Methods that re-resolve fixed targets on copies (occlusion) do not warn again."""
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for method in (gradcam.GradCAM(shapes.module), gradcam.Occlusion(shapes.module, window=32)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            method(x, [0, 1])
        assert len([w for w in caught if "(2, 1) tensor" in str(w.message)]) == 1


# Wrong channel counts (issue 18.19)


def test_four_channel_input_names_the_expected_channels(resnet18: torch.nn.Module) -> None:
    x = torch.rand(1, 4, 32, 32)
    expected = r"4 channels, but the model takes 3 .*'conv1'.*x\[:, :3\]"
    with pytest.raises(GradCAMError, match=expected):
        gradcam.GradCAM(resnet18)(x)
    with pytest.raises(GradCAMError, match="1 channels, but the model takes 3"):
        gradcam.GuidedBackprop(resnet18)(x[:, :1])
    assert input_channels(resnet18) == ("conv1", 3)


def test_wrong_input_of_a_model_without_convolutions() -> None:
    """No convolution to read the channels from: the forward's error becomes one line."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    with pytest.raises(GradCAMError, match=r"cannot take an input of shape \(1, 4, 4, 4\)"):
        compute_gradients(net, torch.rand(1, 4, 4, 4), 0, input_rules=["plain"])


# --- per-image targets (pytorch-grad-cam's convention) ---------------------------------------


def _tiny_classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 5),
    ).eval()


def test_per_image_targets_explain_one_class_per_image() -> None:
    from gradcam.compat.pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = _tiny_classifier()
    x = torch.randn(2, 3, 16, 16)
    cam = gradcam.GradCAM(net, "0")
    result = cam(x, [ClassifierOutputTarget(1), ClassifierOutputTarget(4)])
    assert result.classes.tolist() == [[1], [4]]
    expected = cam(x, torch.tensor([[1], [4]]))
    torch.testing.assert_close(result.raw, expected.raw)
    torch.testing.assert_close(result.scores, expected.scores)
    alone = cam(x, ClassifierOutputTarget(4))  # one alone: every image
    assert alone.classes.tolist() == [[4], [4]]


def test_pytorch_grad_cams_own_targets_are_per_image() -> None:
    pgc_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    net = _tiny_classifier()
    x = torch.randn(2, 3, 16, 16)
    result = gradcam.GradCAM(net, "0")(
        x, [pgc_targets.ClassifierOutputTarget(2), pgc_targets.ClassifierOutputTarget(3)]
    )
    assert result.classes.tolist() == [[2], [3]]


def test_per_image_targets_in_perturbation_and_smoothing_methods() -> None:
    from gradcam.compat.pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = _tiny_classifier()
    x = torch.randn(2, 3, 16, 16)
    per_image_targets = [ClassifierOutputTarget(1), ClassifierOutputTarget(4)]
    for method in (
        gradcam.ScoreCAM(net, "1", progress=False),
        gradcam.GradCAM(net, "0", aug_smooth=True),
    ):
        got = method(x, per_image_targets)
        want = method(x, torch.tensor([[1], [4]]))
        torch.testing.assert_close(got.maps, want.maps)


def test_per_image_segmentation_target_gets_one_image() -> None:
    from gradcam.compat.pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1)
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    mask = np.zeros((8, 8), dtype=np.float32)
    mask[2:5, 2:5] = 1
    result = gradcam.GradCAM(net, "0")(
        x, [SemanticSegmentationTarget(2, mask), SemanticSegmentationTarget(1, mask)]
    )
    want = (net(x)[[0, 1], [2, 1]] * torch.from_numpy(mask)).sum(dim=(-2, -1))
    torch.testing.assert_close(result.scores[:, 0], want.detach())
    assert result.classes.tolist() == [[2], [1]]


def test_per_image_targets_that_do_not_fit_are_one_line_errors() -> None:
    from gradcam.targets import per_image

    logits = torch.randn(3, 5)
    first = per_image(lambda row: row[0])
    with pytest.raises(TargetError, match="2 per-image targets for a batch of 3"):
        resolve_targets([first, first], logits, 3)
    with pytest.raises(TargetError, match="cannot be mixed"):
        resolve_targets([first, 2, 3], logits, 3)
    with pytest.raises(TargetError, match="expected one number"):
        resolve_targets(per_image(lambda row: row), logits, 3)
    # A batch callable written for one image's output: a scalar for the batch names the fix.
    with pytest.raises(TargetError, match="per_image"):
        resolve_targets(lambda out: out[0, 1], logits, 3)


def test_classes_report_the_class_of_a_callable_target() -> None:
    resolved = resolve_targets([ClassScore(2)], torch.randn(2, 4), 2)
    assert resolved.classes.tolist() == [[2], [2]]
