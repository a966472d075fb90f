"""Snapshots of everything a method must leave unchanged in a user's model and input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class ModelState:
    modules: list[tuple[str, int]]
    training: list[bool]
    requires_grad: list[bool]
    grads: list[Tensor | None]
    state: dict[str, Tensor]
    hooks: int


def hook_count(model: nn.Module) -> int:
    total = 0
    for m in model.modules():
        for name in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
        ):
            total += len(getattr(m, name, {}))
    return total


def snapshot(model: nn.Module) -> ModelState:
    return ModelState(
        modules=[(n, id(m)) for n, m in model.named_modules()],
        training=[m.training for m in model.modules()],
        requires_grad=[p.requires_grad for p in model.parameters()],
        grads=[None if p.grad is None else p.grad.clone() for p in model.parameters()],
        state={k: v.clone() for k, v in model.state_dict().items()},
        hooks=hook_count(model),
    )


def assert_unchanged(before: ModelState, model: nn.Module) -> None:
    after = snapshot(model)
    assert after.modules == before.modules
    assert after.training == before.training
    assert after.requires_grad == before.requires_grad
    assert after.hooks == before.hooks
    assert len(after.grads) == len(before.grads)
    for a, b in zip(after.grads, before.grads, strict=True):
        assert (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
    assert after.state.keys() == before.state.keys()
    for key, value in before.state.items():
        assert torch.equal(after.state[key], value), key


def tensor_copy(x: Any) -> tuple[Tensor, bool]:
    return x.detach().clone(), bool(x.requires_grad)
