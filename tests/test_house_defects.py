"""Defects of the house issue, each pinned by a test: conv_input_sizes while
the model runs in another thread, spectral_norm's options checked only where
used (and steps=0 accepted, as the op does), the fakes failing with the
kernels' messages, and TF32 kept out of the float32 torch products."""

import threading

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import convspectra as cs
from helpers import rel_err

# ---------------------------------------------------------------- conv_input_sizes in another thread
_worker_at_gate, _release, _worker_passed = threading.Event(), threading.Event(), threading.Event()
_seen_training: list[bool] = []


class _Gate(torch.nn.Module):
    """Holds the worker thread's forward before the conv until the probe runs."""

    def forward(self, x):
        if threading.current_thread().name == "worker":
            _worker_at_gate.set()
            _release.wait(10)
        else:
            _release.set()
            _worker_passed.wait(2)  # let the worker reach the conv while the probe is under way
        return x


class _Marker(torch.nn.Module):
    def forward(self, x):
        if threading.current_thread().name == "worker":
            _seen_training.append(self.training)
            _worker_passed.set()
        return x


@pytest.mark.parametrize("copyable", [True, False])
def test_conv_input_sizes_is_safe_while_another_thread_runs_the_model(copyable):
    for e in (_worker_at_gate, _release, _worker_passed):
        e.clear()
    _seen_training.clear()
    model = torch.nn.Sequential(_Gate(), torch.nn.Conv2d(3, 4, 3, padding=1), _Marker(), torch.nn.MaxPool2d(2),
                                torch.nn.Conv2d(4, 4, 3, padding=1))
    if not copyable:
        model.lock = threading.Lock()  # deepcopy fails: the in-place probe
    model.train()
    worker = threading.Thread(target=lambda: model(torch.zeros(1, 3, 20, 20)), name="worker")
    worker.start()
    assert _worker_at_gate.wait(10)
    sizes = cs.nn.conv_input_sizes(model, (8, 8))
    worker.join(10)
    assert list(sizes.values()) == [(8, 8), (4, 4)]  # the probe's sizes, not the worker's 20 x 20
    if copyable:  # the live model was never switched to eval mode under the worker
        assert _seen_training == [True]
    assert model.training and all(m.training for m in model.modules())


def test_conv_input_sizes_leaves_no_hooks_and_shares_the_parameters():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sizes = cs.nn.conv_input_sizes(model, (9, 9))
    assert list(sizes.values()) == [(9, 9), (7, 7)]
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # no statistics moved


# ---------------------------------------------------------------- spectral_norm's options
def test_gram_with_zero_steps_is_the_frobenius_norm_at_the_maximising_frequency():
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    F = cs.symbol(w, (6, 5))
    frobenius = torch.linalg.matrix_norm(F).amax()
    assert rel_err(cs.spectral_norm(w, (6, 5), method="gram", steps=0), frobenius) < 1e-12
    with pytest.raises(ValueError, match="steps must be <= 60"):
        cs.spectral_norm(w, (6, 5), method="gram", steps=61)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        cs.spectral_norm(w, (6, 5), method="gram", steps=-1)


@pytest.mark.parametrize("padding", ["circular", "zeros"])
@pytest.mark.parametrize("method", ["exact", "certified", "gram", "sum_taps", "reshape", "l1"])
def test_options_are_checked_only_by_the_methods_that_use_them(method, padding):
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    plain = cs.spectral_norm(w, (6, 5), padding, method)
    uses_lanczos = method == "exact" and padding == "zeros"
    for option, bad in (("tol", -1.0), ("max_iter", 0), ("steps", 999)):
        used = uses_lanczos if option != "steps" else method == "gram"
        if used:
            with pytest.raises(ValueError, match=option):
                cs.spectral_norm(w, (6, 5), padding, method, **{option: bad})
        else:
            assert torch.equal(cs.spectral_norm(w, (6, 5), padding, method, **{option: bad}), plain)


# ---------------------------------------------------------------- fakes fail as the kernels do
def _message(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the message is what is compared
        return str(exc).split("\n")[0]
    return None


BAD_CALLS = {
    "gram_bound steps": lambda t: torch.ops.convspectra.gram_bound(t(2, 3, 3), 61),
    "gram_bound negative steps": lambda t: torch.ops.convspectra.gram_bound(t(2, 3, 3), -1),
    "bjorck iters": lambda t: torch.ops.convspectra.bjorck(t(2, 3, 3), 1001),
    "bjorck_backward shapes": lambda t: torch.ops.convspectra.bjorck_backward(t(2, 3, 2), t(2, 3, 3), 2),
    "cayley_backward shapes": lambda t: torch.ops.convspectra.cayley_backward(t(3, 3), t(2, 3, 3), t(2, 3, 3)),
    "svdvals vector": lambda t: torch.ops.convspectra.svdvals(t(3)),
    "svd vector": lambda t: torch.ops.convspectra.svd(t(3)),
    "cayley vector": lambda t: torch.ops.convspectra.cayley(t(3)),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_fakes_fail_with_the_kernels_messages(name):
    call = BAD_CALLS[name]
    eager = _message(lambda: call(lambda *s: torch.randn(*s)))
    with FakeTensorMode():
        fake = _message(lambda: call(lambda *s: torch.randn(*s)))
    assert eager is not None and fake is not None
    assert fake == eager, (eager, fake)


# ---------------------------------------------------------------- TF32 stays off in the torch products
def test_torch_products_run_with_tf32_off(monkeypatch):
    from convspectra.spectrum import _grid
    seen = []
    real_svd = cs.linalg.svd

    def spy(A):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return real_svd(A)

    monkeypatch.setattr(cs.linalg, "svd", spy)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        w = torch.randn(4, 3, 3, 3, requires_grad=True)
        cs.singular_values(w, (5, 6)).sum().backward()  # the forward keeps vectors: svd runs there
        cs.conv_svd(w.detach(), (5, 6))
        assert seen and all(flags == (False, False) for flags in seen)
        # and restored afterwards
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert _grid.KEEP_VECTORS_ELEMENTS > 0
