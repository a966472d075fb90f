"""Image-text Grad-CAM on CLIP: gradcam against pytorch-grad-cam's CLIP tutorial code.

Run from the repository root::

    .venv/bin/python benchmarks/bench_clip.py             # CLIP ViT-B/16 sized, random weights
    .venv/bin/python benchmarks/bench_clip.py --small     # a tiny CLIP: smoke test

The model is a transformers ``CLIPModel`` of ViT-B/16's size (vision: 12 layers of width 768,
16 px patches at 224 x 224; text: 12 layers of width 512, vocabulary 49,408; 150 M parameters)
with random weights: timings do not depend on the weights. The prompts are 8 random token ids
each (no tokenizer needed). Both libraries explain ``logits_per_image[:, i]`` (prompt ``i``)
at the last vision block's first norm, ``vision_model.encoder.layers[-1].layer_norm1``
(gradcam finds it by itself; :mod:`gradcam.vl.hf`):

* **gradcam**: :class:`gradcam.vl.hf.PromptScores` holds the prompts;
  ``GradCAM(adapter)(x, prompts)``: one forward, one backward batched over the prompts.
* **pytorch-grad-cam**: its tutorial's code: a wrapper returning ``logits_per_image``, its
  ``GradCAM`` with the ViT ``reshape_transform`` (class token dropped, 14 x 14 grid), one
  ``ClassifierOutputTarget`` per prompt; several prompts as its README does several targets,
  the input repeated once per prompt in one call.

Cases: one prompt; 5 prompts in one call. Each timed call returns maps at input size in
[0, 1] (both libraries' own normalization and upsampling). Rounds run interleaved; medians and
minimums after a warm-up; the load average of the machine is printed with the table (timings
on a shared machine are only comparable within one run). Agreement: the largest absolute
difference between the two libraries' maps.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


def build_clip(small: bool) -> nn.Module:
    """A random CLIP of ViT-B/16's size, or a tiny one."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    if small:
        vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 2, "image_size": 64, "patch_size": 16}  # fmt: skip
        text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 2, "vocab_size": 100, "bos_token_id": 1,
                "eos_token_id": 2}  # fmt: skip
        projection = 16
    else:
        vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                  "num_attention_heads": 12, "image_size": 224, "patch_size": 16}  # fmt: skip
        text = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                "num_attention_heads": 8, "vocab_size": 49408}  # fmt: skip
        projection = 512
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection)
    return CLIPModel(config).eval()


class TutorialClassifier(nn.Module):
    """pytorch-grad-cam's CLIP tutorial wrapper: the image-text scores of fixed prompts."""

    def __init__(self, clip: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> None:
        super().__init__()
        self.clip = clip
        self.input_ids, self.attention_mask = input_ids, attention_mask

    def forward(self, x: Tensor) -> Tensor:
        out = self.clip(
            pixel_values=x, input_ids=self.input_ids, attention_mask=self.attention_mask
        )
        return out.logits_per_image  # type: ignore[no-any-return]


def tutorial_reshape(tensor: Tensor, height: int, width: int) -> Tensor:
    """pytorch-grad-cam's ViT ``reshape_transform``: class token dropped, channels first."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a tiny CLIP (smoke test)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default: 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from pytorch_grad_cam import GradCAM as PeerGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from gradcam import GradCAM
    from gradcam.vl.hf import PromptScores

    clip = build_clip(args.small)
    side = int(clip.config.vision_config.image_size)
    grid = side // int(clip.config.vision_config.patch_size)
    vocab = int(clip.config.text_config.vocab_size)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, side, side, generator=generator)
    ids = torch.randint(3, vocab - 2, (5, 8), generator=generator)
    ids[:, 0] = int(clip.config.text_config.bos_token_id)
    ids[:, -1] = int(clip.config.text_config.eos_token_id)  # the text tower pools at the end
    mask = torch.ones_like(ids)
    last = int(clip.config.vision_config.num_hidden_layers) - 1
    layer_name = f"model.vision_model.encoder.layers.{last}.layer_norm1"

    def ours(prompts: int) -> Callable[[], np.ndarray]:
        adapter = PromptScores(clip, ids[:prompts], mask[:prompts]).eval()
        cam = GradCAM(adapter)

        def run() -> np.ndarray:
            result = cam(x, list(range(prompts)))
            assert result.layer == layer_name, result.layer
            return result.maps[0].numpy()

        return run

    def theirs(prompts: int) -> Callable[[], np.ndarray]:
        model = TutorialClassifier(clip, ids[:prompts], mask[:prompts]).eval()
        layer = clip.vision_model.encoder.layers[-1].layer_norm1
        cam = PeerGradCAM(
            model, [layer], reshape_transform=lambda t: tutorial_reshape(t, grid, grid)
        )

        def run() -> np.ndarray:
            batch = x.expand(prompts, -1, -1, -1)
            targets = [ClassifierOutputTarget(i) for i in range(prompts)]
            return np.asarray(cam(input_tensor=batch, targets=targets))

        return run

    cases: dict[str, dict[str, Callable[[], Any]]] = {
        f"{n} prompt{'s' if n > 1 else ''}": {"gradcam": ours(n), "pytorch-grad-cam": theirs(n)}
        for n in (1, 5)
    }
    times: dict[tuple[str, str], list[float]] = {}
    diffs: dict[str, float] = {}
    for case, runs in cases.items():  # warm-up and agreement
        maps = {lib: run() for lib, run in runs.items()}
        diffs[case] = float(np.abs(maps["gradcam"] - maps["pytorch-grad-cam"]).max())
    for round_ in range(args.rounds):
        for case, runs in cases.items():
            order = list(runs.items())
            for lib, run in order[round_ % 2 :] + order[: round_ % 2]:
                started = time.perf_counter()
                run()
                times.setdefault((case, lib), []).append(time.perf_counter() - started)
    load = os.getloadavg()
    size = "tiny CLIP (smoke test)" if args.small else "CLIP ViT-B/16 sized, random weights"
    print(f"{size}, {side}x{side}, layer `{layer_name}`, torch {torch.__version__}, "
          f"{args.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}, "
          f"{args.rounds} rounds\n")  # fmt: skip
    print(
        "| case | gradcam median (min) ms | pytorch-grad-cam median (min) ms | ratio "
        "| max abs diff |"
    )
    print("|---|---|---|---|---|")
    for case in cases:
        mine, peer = times[(case, "gradcam")], times[(case, "pytorch-grad-cam")]
        ratio = statistics.median(peer) / statistics.median(mine)
        print(
            f"| {case} | {1e3 * statistics.median(mine):.1f} ({1e3 * min(mine):.1f}) | "
            f"{1e3 * statistics.median(peer):.1f} ({1e3 * min(peer):.1f}) | {ratio:.2f} | "
            f"{diffs[case]:.2e} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
