"""Plain NumPy and PyTorch implementations of the same objective, the benchmark's yardsticks.

Each takes the whole data set in memory at once, as a user of those libraries would write
it: float32 arrays, BLAS or ATen for the products, temporaries for everything else.
They return (J, gradient (p,) float64) so the benchmark can check they agree with
streamae before it times them.
"""

from __future__ import annotations

import numpy as np


def split(theta: np.ndarray, n: int, s: int):
    """Views W1 (s, n), W2 (n, s), b1 (s,), b2 (n,) of theta (p,)."""
    W1 = theta[: s * n].reshape(s, n)
    W2 = theta[s * n : 2 * s * n].reshape(n, s)
    return W1, W2, theta[2 * s * n : 2 * s * n + s], theta[2 * s * n + s :]


def numpy_objective(theta, X, s, rho=0.01, beta=3.0, lam=1e-4):
    """The notes' sparseAutoencoderCost in float32 NumPy over X (m, n) float32."""
    m, n = X.shape
    W1, W2, b1, b2 = (a.astype(np.float32) for a in split(theta, n, s))
    a2 = 1.0 / (1.0 + np.exp(-(X @ W1.T + b1)))
    a3 = 1.0 / (1.0 + np.exp(-(a2 @ W2.T + b2)))
    rho_hat = a2.mean(axis=0, dtype=np.float64)
    diff = a3 - X
    reconstruction = 0.5 * float(np.sum(diff * diff, dtype=np.float64)) / m
    kl = rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat))
    J = reconstruction + 0.5 * lam * (np.sum(W1.astype(np.float64) ** 2) + np.sum(W2.astype(np.float64) ** 2))
    J += beta * float(np.sum(kl))
    delta3 = diff * a3 * (1 - a3)
    sparse = (beta * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))).astype(np.float32)
    delta2 = (delta3 @ W2 + sparse) * a2 * (1 - a2)
    # (X.T @ delta2).T rather than delta2.T @ X: with 2 threads OpenBLAS 0.3.31 takes
    # 1-18 s for the latter at m = 10^6, s = 25 (0.13 s at 1 thread), a pathology
    # that would flatter every ratio to NumPy.
    grad = np.concatenate(
        [
            ((X.T @ delta2).T / m + lam * W1).ravel(),
            (delta3.T @ a2 / m + lam * W2).ravel(),
            delta2.sum(axis=0, dtype=np.float64) / m,
            delta3.sum(axis=0, dtype=np.float64) / m,
        ]
    )
    return J, grad.astype(np.float64)


class TorchObjective:
    """The same objective in PyTorch CPU float32: autograd or a hand-written backward."""

    def __init__(self, X: np.ndarray, s: int, *, autograd: bool, rho=0.01, beta=3.0, lam=1e-4) -> None:
        import torch

        self.torch = torch
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        self.s, self.autograd = s, autograd
        self.rho, self.beta, self.lam = rho, beta, lam

    def __call__(self, theta: np.ndarray):
        torch = self.torch
        m, n = self.X.shape
        s, rho, beta, lam = self.s, self.rho, self.beta, self.lam
        params = [torch.from_numpy(a.astype(np.float32)) for a in split(theta, n, s)]
        if self.autograd:
            for p in params:
                p.requires_grad_(True)
        W1, W2, b1, b2 = params
        X = self.X
        if self.autograd:
            a2 = torch.sigmoid(torch.addmm(b1, X, W1.T))
            a3 = torch.sigmoid(torch.addmm(b2, a2, W2.T))
            rho_hat = a2.mean(0)
            kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
            J = (
                0.5 * ((a3 - X) ** 2).sum() / m
                + 0.5 * lam * ((W1**2).sum() + (W2**2).sum())
                + beta * kl.sum()
            )
            J.backward()
            grad = torch.cat([p.grad.reshape(-1) for p in params])
            return float(J.detach()), grad.numpy().astype(np.float64)
        with torch.no_grad():
            a2 = torch.sigmoid(torch.addmm(b1, X, W1.T))
            a3 = torch.sigmoid(torch.addmm(b2, a2, W2.T))
            rho_hat = a2.mean(0)
            kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
            diff = a3 - X
            J = 0.5 * (diff * diff).sum() / m + 0.5 * lam * ((W1**2).sum() + (W2**2).sum()) + beta * kl.sum()
            delta3 = diff.mul_(a3).mul_(1 - a3)
            sparse = beta * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))
            delta2 = torch.addmm(sparse, delta3, W2).mul_(a2).mul_(1 - a2)
            grad = torch.cat(
                [
                    (delta2.T @ X / m + lam * W1).reshape(-1),
                    (delta3.T @ a2 / m + lam * W2).reshape(-1),
                    delta2.sum(0) / m,
                    delta3.sum(0) / m,
                ]
            )
            return float(J), grad.numpy().astype(np.float64)


def torch_available() -> bool:
    """True when PyTorch imports (an optional benchmark dependency)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
