"""gradcam.image_flow: which module outputs are per-image maps of the image alone, on tiny
hand-made models (one condition each), and that the model is left as it was."""

from __future__ import annotations

import pytest
import torch
from helpers.state import assert_unchanged, snapshot
from torch import Tensor, nn

from gradcam import find_default_layer
from gradcam.image_flow import ImageFlow, trace_image


def _at(flow: ImageFlow, name: str) -> int:
    return next(i for i, t in enumerate(flow.traced) if t.call.name == name)


class TwoTowers(nn.Module):
    """An image tower and a text tower of 3 prompts (read as a batch of 3), scored together:
    CLIP's shape. The text tower's maps are not of the image."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.text = nn.Sequential(
            nn.Embedding(10, 16), nn.Unflatten(2, (4, 2, 2)), nn.Flatten(0, 1), nn.Conv2d(4, 4, 1)
        )
        self.ids = torch.arange(3).view(3, 1)

    def forward(self, x: Tensor) -> Tensor:
        image = self.pool(self.image(x))
        words = self.text(self.ids).mean(dim=(2, 3))  # (3, 4), after the image's maps
        return image @ words.T  # (B, 3)


class CrossAttends(nn.Module):
    """Image maps, then a per-image text tensor added to them by a module (cross-attention's
    shape): what that module and everything after it output is mixed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.words = nn.Embedding(10, 4)
        self.mix = Mix()
        self.after = nn.Conv2d(4, 4, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x: Tensor) -> Tensor:
        ids = torch.ones(len(x), dtype=torch.long)
        return self.head(self.after(self.mix(self.conv(x), self.words(ids))))


class Mix(nn.Module):
    def forward(self, maps: Tensor, words: Tensor) -> Tensor:
        return maps + words[:, :, None, None]


class TwoBranches(nn.Module):
    """An early stage feeds both a late stage and the output: the late stage is no cut."""

    def __init__(self) -> None:
        super().__init__()
        self.early = nn.Conv2d(3, 4, 3)
        self.late = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: Tensor) -> Tensor:
        early = self.early(x)
        return self.pool(self.late(early)) + self.pool(early)


class Segmenter(nn.Module):
    """Features, then class-logit maps upsampled to the input: those are the output."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.classes = nn.Conv2d(4, 3, 1, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.classes(self.features(x))
        return nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear")


X = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_text_tower_is_not_of_the_image() -> None:
    """The old rule took the text tower's last map (3 prompts as the batch)."""
    model = TwoTowers()
    with trace_image(model, X) as flow:
        assert flow.image_map(_at(flow, "image.1"))
        assert not flow.image_map(_at(flow, "text.3"))  # (3, 4, 2, 2): not of the pixels
    assert find_default_layer(model, X) == "image"


def test_mixing_module_and_what_follows_are_excluded() -> None:
    model = CrossAttends()
    with trace_image(model, X) as flow:
        assert flow.mixing == ["mix"]
        assert [flow.image_map(_at(flow, n)) for n in ("conv", "mix", "after")] == [
            True,
            False,
            False,
        ]
    assert find_default_layer(model, X) == "conv"


def test_the_last_cut_is_chosen() -> None:
    model = TwoBranches()
    with trace_image(model, X) as flow:
        assert flow.is_cut(_at(flow, "early")) and not flow.is_cut(_at(flow, "late"))
    assert find_default_layer(model, X) == "early"


def test_the_output_itself_is_no_feature_map() -> None:
    """The class-logit maps reach the output through an upsampling only."""
    model = Segmenter()
    with trace_image(model, X) as flow:
        assert not flow.image_map(_at(flow, "classes"))
    assert find_default_layer(model, X) == "features"


def test_frozen_parameters_are_traced_alike() -> None:
    """A frozen model: parameter-made tensors still have a history, so nothing is mistaken for
    an outside input; the parameters' flags and values are unchanged."""
    model = CrossAttends().requires_grad_(False)
    before = snapshot(model)
    assert find_default_layer(model, X) == "conv"
    assert_unchanged(before, model)
    assert not any(p.requires_grad for p in model.parameters())


def test_patch_tokens_reach_the_output() -> None:
    """A head reading the class token only: the patch tokens of the last layer do not reach
    the output; a head reading all of them does."""

    class Tokens(nn.Module):
        def __init__(self, pool: bool) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 4, stride=4)
            self.norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 2)
            self.pool = pool

        def forward(self, x: Tensor) -> Tensor:
            patches = self.embed(x).flatten(2).transpose(1, 2)
            tokens = self.norm(torch.cat([patches.mean(1, keepdim=True), patches], 1))
            return self.head(tokens.mean(1) if self.pool else tokens[:, 0])

    x = torch.randn(1, 3, 16, 16)
    for pool in (False, True):
        with trace_image(Tokens(pool), x) as flow:
            assert flow.reaches_output(_at(flow, "norm"), prefix=1) == pool


@pytest.mark.parametrize("model", [TwoTowers(), CrossAttends().train()])
def test_model_left_as_it_was(model: nn.Module) -> None:
    before = snapshot(model)
    with trace_image(model, X):
        pass
    assert_unchanged(before, model)
    assert all(p.grad is None for p in model.parameters())


def test_output_in_an_object_without_tensors_found() -> None:
    """An output whose tensors cannot be found (an opaque object): every layer may lead to it,
    so the choice is the plain last spatial map, as before."""

    class Opaque:
        def __init__(self, logits: Tensor) -> None:
            self.logits = logits

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

        def forward(self, x: Tensor) -> Opaque:
            return Opaque(self.head(self.conv(x)))

    assert find_default_layer(Net(), X) == "conv"


class _HiddenStates(nn.Module):
    """Returns its logits and, beside them, every block's activations (as MONAI's ViT and
    Hugging Face models with ``output_hidden_states`` do)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.b1 = nn.Conv2d(4, 4, 3, padding=1)
        self.b2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h1 = torch.relu(self.b1(self.stem(x)))
        h2 = torch.relu(self.b2(h1))
        return self.head(h2.mean(dim=(2, 3))), [h1, h2]


def test_returned_hidden_states_are_not_outputs() -> None:
    """The hidden states are computed on the way to the logits: the last block is still a cut
    (counting ``h1`` as an output, only the stem would be one)."""
    model = _HiddenStates().eval()
    x = torch.randn(1, 3, 10, 10)
    assert find_default_layer(model, x) == "b2"
    with trace_image(model, x) as flow:
        names = [t.call.name for t in flow.traced]
        assert flow.is_cut(names.index("b2")) and flow.is_cut(names.index("b1"))
