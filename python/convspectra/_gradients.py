"""Closed-form gradients and tangents of the fused ops, in differentiable
torch ops (docs/math.md §8, §10).

The autograd rules of the ops (_ops.py, _autograd.py) call these; being plain
torch ops, a recorded backward (double backward, torch.func) differentiates
through them. Callers run them under _precision.full_float32().
"""

from __future__ import annotations

import torch

def scale_columns(U: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """U @ diag(g) for batched U (..., m, k) and real g (..., k)."""
    return U * g.unsqueeze(-2).to(U.dtype)


def _inverse_gaps(S: torch.Tensor) -> torch.Tensor:
    """F_ij = 1 / (s_j^2 - s_i^2), 0 on the diagonal (out of place: the
    backward itself may be differentiated)."""
    S2 = S * S
    diag = torch.eye(S.shape[-1], dtype=torch.bool, device=S.device)
    gaps = S2.unsqueeze(-2) - S2.unsqueeze(-1)  # s_j^2 - s_i^2 at [i, j]
    return torch.where(diag, 0.0, 1.0 / torch.where(diag, 1.0, gaps))


def svd_backward(U, S, Vh, gU, gS, gVh):
    """Gradient of the reduced SVD A = U diag(S) Vh (real or complex).

    With P-space gradient gP (A = U P Vh locally):
      gP = F o (M - M^H) S + diag(gS) + S F o (N - N^H) + i diag(Im(M - N)) / (2 S)
      M = U^H gU, N = V^H gV, F_ij = 1 / (s_j^2 - s_i^2) (0 on the diagonal),
    plus the parts of gU, gV outside the column spaces of U and V. The last
    term of gP only exists for complex inputs; for a gauge-invariant loss
    Im M_jj = -Im N_jj. A loss of S alone needs only U diag(gS) Vh, which stays
    finite with repeated singular values.
    """
    if gU is None and gVh is None:
        return scale_columns(U, gS) @ Vh if gS is not None else None
    m, n = U.shape[-2], Vh.shape[-1]
    V = Vh.mH
    Sc = S.to(U.dtype)
    Fm = _inverse_gaps(S).to(U.dtype)
    gP = torch.zeros(U.shape[:-2] + (S.shape[-1], S.shape[-1]), dtype=U.dtype, device=U.device)
    if gS is not None:
        gP = gP + torch.diag_embed(gS.to(U.dtype))
    if gU is not None:
        M = U.mH @ gU
        gP = gP + (Fm * (M - M.mH)) * Sc.unsqueeze(-2)
        if U.is_complex():
            gP = gP + torch.diag_embed(1j * M.diagonal(dim1=-2, dim2=-1).imag / (2 * S))
    if gVh is not None:
        gV = gVh.mH
        N = V.mH @ gV
        gP = gP + Sc.unsqueeze(-1) * (Fm * (N - N.mH))
        if U.is_complex():
            gP = gP - torch.diag_embed(1j * N.diagonal(dim1=-2, dim2=-1).imag / (2 * S))
    gA = U @ gP @ Vh
    Sinv = (1.0 / S).to(U.dtype)
    if gU is not None and m > S.shape[-1]:
        proj = gU - U @ (U.mH @ gU)
        gA = gA + (proj * Sinv.unsqueeze(-2)) @ Vh
    if gVh is not None and n > S.shape[-1]:
        gV = gVh.mH
        proj = gV - V @ (V.mH @ gV)
        gA = gA + (U * Sinv.unsqueeze(-2)) @ proj.mH
    return gA


def svd_jvp(U, S, Vh, dA):
    """Tangents (dU, dS, dVh) of the reduced SVD A = U diag(S) Vh along dA.

    With dP = U^H dA V: dS = Re diag(dP); U^H dU = F o (dP S + S dP^H) and
    V^H dV = F o (S dP + dP^H S) off the diagonal (F as in svd_backward), for
    complex inputs the phase gauge i Im(dP_jj) / (2 s_j) split between the two
    diagonals; plus (I - U U^H) dA V S^-1 and (I - V V^H) dA^H U S^-1 when the
    matrix is not square.
    """
    m, n, k = U.shape[-2], Vh.shape[-1], S.shape[-1]
    V = Vh.mH
    dAV = dA @ V
    dP = U.mH @ dAV
    dS = dP.diagonal(dim1=-2, dim2=-1).real
    Sc = S.to(U.dtype)
    Fm = _inverse_gaps(S).to(U.dtype)
    dX = Fm * (dP * Sc.unsqueeze(-2) + Sc.unsqueeze(-1) * dP.mH)
    dY = Fm * (Sc.unsqueeze(-1) * dP + dP.mH * Sc.unsqueeze(-2))
    if U.is_complex():
        phase = torch.diag_embed(1j * dP.diagonal(dim1=-2, dim2=-1).imag / (2 * S))
        dX, dY = dX + phase, dY - phase
    dU, dV = U @ dX, V @ dY
    Sinv = (1.0 / S).to(U.dtype).unsqueeze(-2)
    if m > k:
        dU = dU + (dAV - U @ dP) * Sinv
    if n > k:
        dV = dV + (dA.mH @ U - V @ dP.mH) * Sinv
    return dU, dS, dV.mH


def gram_bound_gradient(A: torch.Tensor, bound: torch.Tensor, steps: int) -> torch.Tensor:
    """d bound / d A of the Gram-iteration bound, in closed form.

    With B = A^H A and p = 2^steps the bound is tr(B^p)^(1 / 2p) (the Frobenius
    norm of the last Gram matrix B^(p/2)), whose gradient is
    bound * A B^(p-1) / tr(B^p); written scale-free with X = A / bound (every
    power then has norm <= 1, nothing overflows): X B_X^(p-1) / tr(B_X^p).
    B_X^(p-1) is the product of B_X^(2^j), j < steps, instead of
    differentiating through the iteration.
    """
    wide = A.shape[-2] < A.shape[-1]
    X = A.mH if wide else A
    safe = torch.where(bound > 0, bound, torch.ones_like(bound))
    X = X / safe[..., None, None].to(A.dtype)
    square = X.mH @ X  # B_X^(2^j) for j = 0, 1, ...
    power = None  # B_X^(2^j - 1)
    for j in range(steps):
        power = square if power is None else power @ square
        if j + 1 < steps:
            square = square @ square
    # tr(B_X^p) = ||B_X^(p/2)||_F^2: the last squaring is never formed
    trace = torch.linalg.matrix_norm(square).square() if steps else square.diagonal(dim1=-2, dim2=-1).real.sum(-1)
    trace = torch.where(bound > 0, trace, torch.ones_like(trace))
    g = (X if power is None else X @ power) / trace[..., None, None].to(A.dtype)
    g = torch.where((bound > 0)[..., None, None], g, torch.zeros_like(g))
    return g.mH if wide else g


def _cayley_parts(W: torch.Tensor):
    """For m >= n: V (the rows below the top n x n block U) and
    M = (I + A)^{-1}, A = U - U^H + V^H V, in differentiable torch ops."""
    n = W.shape[-1]
    U, V = W[..., :n, :], W[..., n:, :]
    A = U - U.mH + V.mH @ V
    M = torch.linalg.inv(torch.eye(n, dtype=W.dtype, device=W.device) + A)
    return V, M


def cayley_vjp(W: torch.Tensor, gQ: torch.Tensor) -> torch.Tensor:
    """The Cayley map's vector-Jacobian product in differentiable torch ops
    (what convspectra::cayley_backward computes in one kernel). For m >= n,
    Q = [2 M - I; -2 V M]: gM = 2 (gQ_top - V^H gQ_bot), gA = -M^H gM M^H,
    gU = gA - gA^H, gV = V (gA + gA^H) - 2 gQ_bot M^H; wide W through W^H."""
    m, n = W.shape[-2:]
    if m < n:
        return cayley_vjp(W.mH, gQ.mH).mH
    V, M = _cayley_parts(W)
    g_top, g_bot = gQ[..., :n, :], gQ[..., n:, :]
    gA = -(M.mH @ (2 * (g_top - V.mH @ g_bot)) @ M.mH)
    return torch.cat([gA - gA.mH, V @ (gA + gA.mH) - 2 * g_bot @ M.mH], -2)


def cayley_jvp(W: torch.Tensor, dW: torch.Tensor) -> torch.Tensor:
    """The Cayley map's tangent: dM = -M dA M, dQ = [2 dM; -2 (dV M + V dM)]."""
    m, n = W.shape[-2:]
    if m < n:
        return cayley_jvp(W.mH, dW.mH).mH
    V, M = _cayley_parts(W)
    dU, dV = dW[..., :n, :], dW[..., n:, :]
    dM = -(M @ (dU - dU.mH + dV.mH @ V + V.mH @ dV) @ M)
    return torch.cat([2 * dM, -2 * (dV @ M + V @ dM)], -2)


def bjorck_vjp(X: torch.Tensor, grad: torch.Tensor, iters: int) -> torch.Tensor:
    """The Bjorck steps' vector-Jacobian product in differentiable torch ops
    (what convspectra::bjorck_backward computes in one kernel): through
    Y' = 1.5 Y - 0.5 Y Y^H Y, G <- 1.5 G - 0.5 (G Y^H Y + Y G^H Y + Y Y^H G),
    iterates kept; a wide X through X^H (the smaller Gram matrix)."""
    if X.shape[-2] < X.shape[-1]:
        return bjorck_vjp(X.mH, grad.mH, iters).mH
    iterates, Y = [], X
    for _ in range(iters):
        iterates.append(Y)
        Y = 1.5 * Y - 0.5 * Y @ (Y.mH @ Y)
    G = grad
    for Y in reversed(iterates):
        G = 1.5 * G - 0.5 * (G @ (Y.mH @ Y) + Y @ (G.mH @ Y) + Y @ (Y.mH @ G))
    return G


def bjorck_jvp(X: torch.Tensor, dX: torch.Tensor, iters: int) -> torch.Tensor:
    """The Bjorck steps' tangent, carried through the same iteration."""
    if X.shape[-2] < X.shape[-1]:
        return bjorck_jvp(X.mH, dX.mH, iters).mH
    Y, dY = X, dX
    for _ in range(iters):
        B = Y.mH @ Y
        Y, dY = 1.5 * Y - 0.5 * Y @ B, 1.5 * dY - 0.5 * (dY @ B + Y @ (dY.mH @ Y + Y.mH @ dY))
    return dY

