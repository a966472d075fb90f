"""Vision-and-language targets (section 8) on tiny hand-weighted models with known gradients.

Both models read the image through ``features`` (a 1x1 identity conv, then ReLU, so ``A`` is
the non-negative input image itself), global-average-pooled to ``g`` (C,). With ``Z = h * w``,
the gradient of any score that is linear in ``g`` with coefficients ``v`` is ``v / Z`` at every
position, so Grad-CAM's weights are ``alpha = v / Z`` and its map is
``ReLU(sum_k alpha_k A^k)``: each test computes ``v``.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from gradcam import GradCAM
from gradcam.errors import TargetError
from gradcam.targets import Answer, CaptionLogProb, CaptionWord

C, T, V = 3, 4, 5  # channels, caption steps, vocabulary


def _identity_features() -> nn.Sequential:
    features = nn.Sequential(nn.Conv2d(3, C, 1), nn.ReLU())
    with torch.no_grad():
        features[0].weight.copy_(torch.eye(C, 3).view(C, 3, 1, 1))
        features[0].bias.zero_()
    return features


class TinyCaptioner(nn.Module):
    """Step ``t`` scores ``z_t = W_t g`` (a per-step linear read-out of the pooled image)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _identity_features()
        self.steps = nn.Parameter(torch.randn(T, V, C, generator=torch.Generator().manual_seed(1)))

    def forward(self, x: Tensor) -> Tensor:
        g = self.features(x).mean(dim=(2, 3))  # (B, C)
        return torch.einsum("tvc,bc->btv", self.steps, g)


class TinyVQA(nn.Module):
    """Answer scores ``W (g * q)``: the pointwise product of image and question features."""

    def __init__(self, question: Tensor) -> None:
        super().__init__()
        self.features = _identity_features()
        self.answers = nn.Linear(C, V, bias=False)
        self.question = question  # (C,), what an adapter holds for one question

    def forward(self, x: Tensor) -> Tensor:
        return self.answers(self.features(x).mean(dim=(2, 3)) * self.question)


def _expected(model: nn.Module, x: Tensor, v: Tensor) -> Tensor:
    """ReLU(sum_k v_k / Z A^k) for one image."""
    with torch.no_grad():
        a = model.features(x)[0]
    return torch.relu(torch.einsum("c,chw->hw", v / a[0].numel(), a))


X = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(0))
CAPTION = [3, 1, 4, 0]


def test_caption_word_is_its_step_score() -> None:
    model = TinyCaptioner().eval()
    result = GradCAM(model, "features")(X, CaptionWord(CAPTION, 2))
    torch.testing.assert_close(result.scores[0, 0], model(X)[0, 2, 4])
    assert result.classes.tolist() == [[4]]  # the word's token id
    expected = _expected(model, X, model.steps[2, 4].detach())
    torch.testing.assert_close(result.raw[0, 0], expected)


def test_caption_log_probability_and_its_gradient() -> None:
    model = TinyCaptioner().eval()
    result = GradCAM(model, "features")(X, CaptionLogProb(CAPTION))
    with torch.no_grad():
        logits = model(X)[0]  # (T, V)
        probs = logits.softmax(dim=-1)
    log_prob = sum(float(logits[t].log_softmax(-1)[w]) for t, w in enumerate(CAPTION))
    assert float(result.scores[0, 0]) == pytest.approx(log_prob, rel=1e-6)
    # d/dg sum_t log softmax(W_t g)[w_t] = sum_t (W_t[w_t] - sum_v p_tv W_t[v])
    w = model.steps.detach()
    v = sum(w[t, word] - probs[t] @ w[t] for t, word in enumerate(CAPTION))
    assert isinstance(v, Tensor)
    torch.testing.assert_close(result.raw[0, 0], _expected(model, X, v))


def test_a_shorter_caption_uses_the_first_steps() -> None:
    model = TinyCaptioner().eval()
    whole = CaptionLogProb(CAPTION[:2])(model(X))
    with torch.no_grad():
        logits = model(X)[0]
    expected = logits[0].log_softmax(-1)[3] + logits[1].log_softmax(-1)[1]
    torch.testing.assert_close(whole[0].detach(), expected)


def test_forced_answers_move_the_map() -> None:
    """Fig. 12's point: the map of an answer the model did not give is its own map."""
    question = torch.tensor([1.0, -2.0, 0.5])
    model = TinyVQA(question).eval()
    with torch.no_grad():
        model.answers.weight.copy_(torch.eye(V, C) - torch.eye(V, C).roll(1, dims=0))
        model.answers.weight[3] = torch.tensor([0.0, -1.0, 1.0])
    result = GradCAM(model, "features")(X, [Answer(0), Answer(3)])
    assert result.classes.tolist() == [[0, 3]]
    for k, index in enumerate((0, 3)):
        v = model.answers.weight[index].detach() * question
        torch.testing.assert_close(result.raw[0, k], _expected(model, X, v))
    # Answer 0 reads the first channel of the image, the forced answer 3 the third one.
    torch.testing.assert_close(result.raw[0, 0], X[0, 0] / X[0, 0].numel())
    assert not torch.allclose(result.raw[0, 0], result.raw[0, 1])
    assert result.raw[0, 1].amax() > 0


def test_bad_vision_language_targets() -> None:
    model = TinyCaptioner().eval()
    cam = GradCAM(model, "features")
    with pytest.raises(TargetError, match="position 4 is outside a caption of 4 tokens"):
        CaptionWord(CAPTION, 4)
    with pytest.raises(TargetError, match="token id 7 is out of range: the vocabulary has 5"):
        cam(X, CaptionLogProb([7]))
    with pytest.raises(TargetError, match="the caption has 5 tokens but the model gave scores"):
        cam(X, CaptionLogProb([1, 1, 1, 1, 1]))
    with pytest.raises(TargetError, match="non-empty sequence of integer ids"):
        CaptionLogProb([])
    with pytest.raises(TargetError, match="caption targets need"):
        GradCAM(TinyVQA(torch.ones(C)), "features")(X, CaptionLogProb([1]))
    with pytest.raises(TargetError, match="answer 9 is out of range: the model has 5 answers"):
        GradCAM(TinyVQA(torch.ones(C)), "features")(X, Answer(9))
    with pytest.raises(TargetError, match="non-negative integer index"):
        Answer(-1)
