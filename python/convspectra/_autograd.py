"""The autograd.Functions the package calls the fused ops through in eager
mode, and the helpers that refuse derivatives a result does not have.

The Functions add what ``torch.library.register_autograd`` (_ops.py) cannot:
forward-mode AD, torch.func transforms (setup_context, a jvp, vmap through the
ops' batching rules) and backward passes that are themselves differentiable
when recorded (differentiating_backward). torch.compile traces the ops
instead (Dynamo cannot trace a custom jvp; the ops' registered autograd is the
same). Products in the rules run with TF32 off (_precision).
"""

from __future__ import annotations

import torch

from ._gradients import (bjorck_jvp, bjorck_vjp, cayley_jvp, cayley_vjp, gram_bound_gradient, scale_columns,
                         svd_backward, svd_jvp)
from ._precision import in_full_float32

def differentiating_backward() -> bool:
    """Whether a backward running now is itself recorded (create_graph=True,
    or under a torch.func transform): it then computes with differentiable
    torch ops (and the autograd-aware wrappers below) instead of the fused
    backward kernels, which autograd cannot see through. Never while
    torch.compile traces: it keeps the fused kernels and supports no double
    backward anyway."""
    return torch.is_grad_enabled() and not torch.compiler.is_compiling()


try:
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters as _functorch_interpreters
    from torch._C._functorch import TransformType as _TransformType
except ImportError:  # a torch without these internals: nothing to detect
    _functorch_interpreters = None


def functorch_active() -> bool:
    """Whether a torch.func transform (grad, vmap, jvp, ...) is running."""
    return _functorch_interpreters is not None and bool(_functorch_interpreters())


def check_forward_level(name: str) -> None:
    """Raises in a jvp rule under nested forward-mode transforms
    (torch.func.jacfwd(torch.func.jacfwd(f))): torch.func does not show the
    outer level what an autograd.Function's jvp computes, so the result would
    be silently wrong. Forward over reverse (torch.func.hessian) is fine."""
    if _functorch_interpreters is None:
        return
    if sum(i.key() == _TransformType.Jvp for i in _functorch_interpreters()) > 1:
        raise RuntimeError(f"{name}: nested forward-mode AD (e.g. jacfwd(jacfwd(f))) is not supported; "
                           "use torch.func.hessian (forward over reverse) or jacrev(jacrev(f))")


class SVD(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(A):
        return torch.ops.convspectra.svd(A)

    @staticmethod
    def setup_context(ctx, inputs, output):
        # unused outputs arrive as None, not zeros: a loss of S alone then skips the
        # 1 / (s_j^2 - s_i^2) terms (infinite for repeated values)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*output)
        ctx.save_for_forward(*output)

    @staticmethod
    @in_full_float32
    def backward(ctx, gU, gS, gVh):
        # plain torch ops on the saved factors: differentiated, they lead back here
        return svd_backward(*ctx.saved_tensors, gU, gS, gVh)

    @staticmethod
    @in_full_float32
    def jvp(ctx, dA):
        check_forward_level("convspectra.linalg.svd")
        return svd_jvp(*ctx.saved_tensors, dA)


class SVDVals(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(A):
        return torch.ops.convspectra.svdvals(A)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    @in_full_float32
    def backward(ctx, gS):
        (A,) = ctx.saved_tensors
        U, _, Vh = SVD.apply(A) if differentiating_backward() else torch.ops.convspectra.svd(A)
        return scale_columns(U, gS) @ Vh

    @staticmethod
    @in_full_float32
    def jvp(ctx, dA):
        check_forward_level("convspectra.linalg.svdvals")
        (A,) = ctx.saved_tensors
        U, _, Vh = SVD.apply(A)
        return (U.mH @ dA @ Vh.mH).diagonal(dim1=-2, dim2=-1).real


class GramBound(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(A, steps):
        return torch.ops.convspectra.gram_bound(A, steps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.steps = inputs[1]
        ctx.save_for_backward(inputs[0], output)
        ctx.save_for_forward(inputs[0], output)

    @staticmethod
    @in_full_float32
    def backward(ctx, grad):
        A, bound = ctx.saved_tensors  # differentiable: the bound leads back here
        return gram_bound_gradient(A, bound, ctx.steps) * grad[..., None, None].to(A.dtype), None

    @staticmethod
    @in_full_float32
    def jvp(ctx, dA, _):
        check_forward_level("convspectra (Gram-iteration bound)")
        A, bound = ctx.saved_tensors
        return (gram_bound_gradient(A, bound, ctx.steps).conj() * dA).sum((-2, -1)).real


class Cayley(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(W):
        return torch.ops.convspectra.cayley(W)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(inputs[0], output[1])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    @in_full_float32
    def backward(ctx, grad_Q, _):
        W, M = ctx.saved_tensors
        if differentiating_backward():
            return cayley_vjp(W, grad_Q)
        return torch.ops.convspectra.cayley_backward(grad_Q, W, M)

    @staticmethod
    @in_full_float32
    def jvp(ctx, dW):
        check_forward_level("convspectra.linalg.cayley")
        (W,) = ctx.saved_tensors
        return cayley_jvp(W, dW), None


class Bjorck(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(X, iters):
        return torch.ops.convspectra.bjorck(X, iters)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.iters = inputs[1]
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    @in_full_float32
    def backward(ctx, grad):
        (X,) = ctx.saved_tensors
        if differentiating_backward():
            return bjorck_vjp(X, grad, ctx.iters), None
        return torch.ops.convspectra.bjorck_backward(grad, X, ctx.iters), None

    @staticmethod
    @in_full_float32
    def jvp(ctx, dX, _):
        check_forward_level("convspectra.linalg.bjorck")
        (X,) = ctx.saved_tensors
        return bjorck_jvp(X, dX, ctx.iters)


def apply_op(function, op, *args):
    """function.apply in eager mode, the op itself while torch.compile traces."""
    return op(*args) if torch.compiler.is_compiling() else function.apply(*args)


class RaiseOnDerivative(torch.autograd.Function):
    """Identity on x, connected to x and to source (a tensor x was computed
    from without autograd, or None): any derivative through it, backward or
    jvp, raises RuntimeError(message)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, source, message):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.message = inputs[2]

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(ctx.message)

    @staticmethod
    def jvp(ctx, *_):
        raise RuntimeError(ctx.message)


class FirstOrderOnly(torch.autograd.Function):
    """Identity whose gradient, when the backward is recorded, cannot be
    differentiated again."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, name):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.name = inputs[1]

    @staticmethod
    @in_full_float32
    def backward(ctx, grad):
        if not differentiating_backward():
            return grad, None
        message = (f"{ctx.name}: double backward is not supported; its gradient is exact to first order only "
                   "(a vector found without autograd is held fixed)")
        return RaiseOnDerivative.apply(grad, None, message), None

    @staticmethod
    def jvp(ctx, dx, _):
        return dx


def not_differentiable(out: torch.Tensor, source: torch.Tensor, name: str) -> torch.Tensor:
    """out, computed from source without autograd; a derivative of it raises."""
    if torch.compiler.is_compiling() or not torch.is_grad_enabled():
        return out
    return RaiseOnDerivative.apply(out, source, f"{name} is not differentiable (a projection step, meant for "
                                                 "use between optimiser steps under torch.no_grad())")


def first_order_only(x: torch.Tensor, name: str) -> torch.Tensor:
    """x, for a result whose autograd graph gives the right gradient but not
    the right second derivative (e.g. a norm ||T(w) y|| with its singular
    vector y found without autograd): a second differentiation through x
    (double backward, torch.func.hessian) raises instead of returning a
    wrong Hessian. First-order reverse and forward mode are unchanged; under
    torch.compile (no double backward there) x itself."""
    return x if torch.compiler.is_compiling() else FirstOrderOnly.apply(x, name)

