"""The per-model lock and eval mode of :mod:`gradcam.hooks`, on tiny models."""

from __future__ import annotations

import copy
import pickle
import threading

import torch
from helpers.state import assert_unchanged, snapshot
from torch import nn

from gradcam import GradCAM
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
        assert _held_elsewhere(wrapper)
    _settle()
    with model_lock(net[1]):
        assert _held_elsewhere(net[0])  # one lock per model: its parts take turns too
    _settle()
    with model_lock(net):
        assert _free(_net())  # another model runs on


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
    # The lock is kept on the model: the one attribute it gains, shared by its modules.
    assert vars(net).keys() - vars(_net()).keys() == {"_gradcam_lock"}
    assert len({id(vars(m)["_gradcam_lock"]) for m in net.modules()}) == 1


class _Counting:
    """A re-entrant lock that counts its acquisitions."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.count = 0

    def __enter__(self) -> bool:
        self.count += 1
        return self.lock.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.lock.__exit__(*exc)


def test_one_call_acquires_the_models_one_lock_twice() -> None:
    net = nn.Sequential(*_net(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with model_lock(net):  # gives the model its lock
        pass
    counting = _Counting()
    vars(net)["_gradcam_lock"].lock = counting  # the one lock, shared by every module
    assert all(vars(m)["_gradcam_lock"].lock is counting for m in net.modules())
    GradCAM(net, "0")(torch.rand(1, 3, 8, 8), [1])
    assert counting.count == 2  # the engine's block and eval_mode's, re-entered


def test_copies_of_a_model_get_locks_of_their_own() -> None:
    net = _net()
    with model_lock(net):
        copied = copy.deepcopy(net)  # while held: a copy's lock is never the model's
        assert vars(copied)["_gradcam_lock"] is None
        restored = pickle.loads(pickle.dumps(net))
        assert _free(copied) and _free(restored)
        assert _held_elsewhere(copy.copy(net))  # a shallow copy shares the modules
    _settle()
    assert vars(copied)["_gradcam_lock"] is not vars(net)["_gradcam_lock"]


def test_a_module_added_later_and_two_models_joined_take_turns() -> None:
    net, other = _net(), _net()
    with model_lock(net), model_lock(other):
        pass
    net.append(nn.Identity())  # no lock yet: the next block gives it the model's
    joined = nn.Sequential(net, other)  # two models locked apart: both locks, in one order
    with model_lock(joined):
        assert _held_elsewhere(net[3]) and _held_elsewhere(other)
    _settle()
    assert vars(net[3])["_gradcam_lock"] is vars(net)["_gradcam_lock"]
    assert _free(joined)


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
