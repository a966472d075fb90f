"""The per-model lock and eval mode of :mod:`gradcam.hooks`, on tiny models."""

from __future__ import annotations

import threading

import torch
from helpers.state import assert_unchanged, snapshot
from torch import nn

from gradcam.engine import eval_mode as engine_eval_mode
from gradcam.hooks import (
    InputCapture,
    LayerCapture,
    capture_input,
    capture_layer,
    eval_mode,
    model_lock,
    record_outputs,
)


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())


_PROBES: list[threading.Thread] = []


def _settle() -> None:
    """Wait for the probes still waiting from an earlier block: one that waits may already
    hold some of the locks of the parts it covers."""
    while _PROBES:
        _PROBES.pop().join(timeout=30.0)


def _held_elsewhere(module: nn.Module, timeout: float = 0.5) -> bool:
    """Whether another thread would have to wait for ``module``'s lock (a free lock may take a
    loaded machine a while to hand over: ``_free`` waits longer)."""
    acquired = threading.Event()

    def probe() -> None:
        with model_lock(module):
            acquired.set()

    # A daemon that waits is not joined: it gets the lock once the caller's block ends
    # (`_settle` waits for it).
    thread = threading.Thread(target=probe, daemon=True)
    _PROBES.append(thread)
    thread.start()
    got = acquired.wait(timeout=timeout)
    if got:
        thread.join()
    return not got


def _free(module: nn.Module) -> bool:
    return not _held_elsewhere(module, timeout=30.0)


def test_lock_is_reentrant_and_excludes_other_threads() -> None:
    net = _net()
    assert _free(net)
    with model_lock(net), model_lock(net):
        assert _held_elsewhere(net)
    assert _free(net)


def test_lock_of_a_wrapper_excludes_the_wrapped_model_and_its_parts() -> None:
    net = _net()
    wrapper = nn.Sequential(nn.Identity(), net)
    with model_lock(wrapper):
        assert _held_elsewhere(net) and _held_elsewhere(net[1])
    _settle()
    with model_lock(net[1]):
        # Before the wrapper's probe: waiting, it may hold some of its parts' locks already.
        assert _free(net[0])  # a part not shared runs on
        assert _held_elsewhere(wrapper)


def test_lock_is_released_when_the_block_raises() -> None:
    net = _net()
    try:
        with model_lock(net):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert _free(net)


def test_lock_leaves_the_model_untouched() -> None:
    net = _net().train()
    before = snapshot(net)
    with model_lock(net):
        net[0].weight.sum()
    assert_unchanged(before, net)
    assert vars(net).keys() == vars(_net()).keys()


def test_eval_mode_restores_mixed_flags_and_holds_the_lock() -> None:
    net = _net().train()
    net[1].eval()  # a frozen BatchNorm inside a training model
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
        assert _held_elsewhere(net)
    assert [m.training for m in net.modules()] == [True, True, False, True]
    assert _free(net)
    assert engine_eval_mode is eval_mode  # one home, re-exported by the engine


def test_eval_mode_on_an_eval_model_writes_nothing_but_still_locks() -> None:
    net = _net().eval()
    with eval_mode(net):
        assert _held_elsewhere(net)


def test_record_outputs_holds_the_lock() -> None:
    net = _net()
    with torch.no_grad(), record_outputs(net) as calls:
        assert _held_elsewhere(net)
        net(torch.zeros(1, 3, 5, 5))
    assert [c.name for c in calls] == ["0", "1", "2"]
    assert _free(net)


def test_captures_name_what_they_hold() -> None:
    """A layer's output is ``output``; a module's input is ``input`` (it once was called
    ``activation`` in both)."""
    net = _net().eval()
    x = torch.rand(1, 3, 5, 5)
    with (
        torch.no_grad(),
        capture_layer(net[0], "0", detach=False) as out,
        capture_input(net[2], "2") as seen,
    ):
        y = net(x)
    assert isinstance(out, LayerCapture) and isinstance(seen, InputCapture)
    assert out.output is not None and seen.input is not None
    torch.testing.assert_close(out.output, net[0](x))
    torch.testing.assert_close(seen.input, net[1](net[0](x)))
    torch.testing.assert_close(y, torch.relu(seen.input))
    assert out.calls == seen.calls == 1
    assert not hasattr(out, "activation") and not hasattr(seen, "activation")
