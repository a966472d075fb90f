"""Fill torch's and Hugging Face's caches with generated weights, at the exact paths the
libraries read, so that loading pretrained weights by name runs with no network.

The session's caches are empty folders (``tests/conftest.py``); these write into them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from gradcam.weights import hub_cache, torch_checkpoint, torchvision_member

#: The revision the filled Hub repositories' ``refs/main`` points to.
REVISION = "0123456789abcdef0123456789abcdef01234567"


def half_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict with floats in float16: half the file, loads into float32."""
    return {
        k: v.half() if v.is_floating_point() else v.clone() for k, v in module.state_dict().items()
    }


def fill_torchvision(
    name: str, member: str = "DEFAULT", seed: int = 0, **kwargs: Any
) -> tuple[Path, nn.Module]:
    """Random weights of torchvision architecture ``name`` saved where torch's hub cache keeps
    its ``member`` weights; returns the file and the model they came from. ``kwargs`` go to
    the builder (detectors and segmenters: ``weights_backbone=None``, nothing downloaded)."""
    weights = torchvision_member(name, member)
    assert weights is not None, (name, member)
    torch.manual_seed(seed)
    model = torchvision.models.get_model(
        name, weights=None, num_classes=len(weights.meta["categories"]), **kwargs
    )
    file = torch_checkpoint(weights.url)
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(half_state(model), file)
    return file, model


def hub_snapshot_folder(repo: str) -> Path:
    """The snapshot folder of Hub repository ``repo`` in the Hugging Face cache
    (``models--ORG--NAME/snapshots/<REVISION>``, with ``refs/main``), created empty."""
    root = hub_cache() / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(REVISION)
    folder = root / "snapshots" / REVISION
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fill_hub(repo: str, files: dict[str, Any]) -> Path:
    """Write ``files`` (name -> a state dict saved as safetensors, a dict saved as JSON, or
    bytes) into ``repo``'s cached snapshot; returns the snapshot folder."""
    from safetensors.torch import save_file

    folder = hub_snapshot_folder(repo)
    for name, content in files.items():
        path = folder / name
        if name.endswith(".safetensors"):
            save_file({k: v.contiguous() for k, v in content.items()}, str(path))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(json.dumps(content))
    return folder
