"""Obviously-correct slow twins of the fast code, written for the tests in plain NumPy."""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), elementwise."""
    return 1.0 / (1.0 + np.exp(-z))


def split_theta(theta: np.ndarray, n: int, s: int):
    """W1 (s, n), W2 (n, s), b1 (s,), b2 (n,) from the flat vector, by hand."""
    W1 = theta[: s * n].reshape(s, n)
    W2 = theta[s * n : 2 * s * n].reshape(n, s)
    b1 = theta[2 * s * n : 2 * s * n + s]
    b2 = theta[2 * s * n + s :]
    return W1, W2, b1, b2


def hidden_layer(X: np.ndarray, W1: np.ndarray, b1: np.ndarray, activation: str = "sigmoid") -> np.ndarray:
    """a2 (m, s) = f(X W1ᵀ + b1) with f the sigmoid or np.tanh, all rows at once, float64."""
    z2 = np.asarray(X, dtype=np.float64) @ W1.T + b1
    return np.tanh(z2) if activation == "tanh" else sigmoid(z2)


def dense_objective(
    theta, X, *, hidden, rho=0.01, beta=3.0, lam=1e-4, decoder="sigmoid", activation="sigmoid"
):
    """The notes' sparseAutoencoderCost on all of X (m, n) at once, in float64.

    tanh hidden units, written out separately from the sigmoid ones: q = (a2 + 1)/2,
    q̂ = mean q, penalty β Σ KL(ρ‖q̂); ∂J/∂a2 gains β·(−ρ/q̂ + (1−ρ)/(1−q̂))·(1/2)/m, and
    f′ = 1 − a2².  Returns (J, grad (p,), terms dict).
    """
    X = np.asarray(X, dtype=np.float64)
    m, n = X.shape
    W1, W2, b1, b2 = split_theta(np.asarray(theta, dtype=np.float64), n, hidden)
    a2 = hidden_layer(X, W1, b1, activation)
    z3 = a2 @ W2.T + b2
    a3 = z3 if decoder == "linear" else sigmoid(z3)
    reconstruction = 0.5 * np.sum((a3 - X) ** 2) / m
    weight_decay = 0.5 * lam * (np.sum(W1**2) + np.sum(W2**2))
    delta3 = (a3 - X) if decoder == "linear" else (a3 - X) * a3 * (1 - a3)
    if activation == "tanh":
        q_hat = ((a2 + 1) / 2).mean(axis=0)
        kl = rho * np.log(rho / q_hat) + (1 - rho) * np.log((1 - rho) / (1 - q_hat))
        sparsity_term = 0.5 * beta * (-rho / q_hat + (1 - rho) / (1 - q_hat))
        slope = 1 - a2**2
    else:
        rho_hat = a2.mean(axis=0)
        kl = rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat))
        sparsity_term = beta * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))
        slope = a2 * (1 - a2)
    sparsity = beta * np.sum(kl)
    delta2 = (delta3 @ W2 + sparsity_term) * slope
    grad = np.concatenate(
        [
            (delta2.T @ X / m + lam * W1).ravel(),
            (delta3.T @ a2 / m + lam * W2).ravel(),
            delta2.mean(axis=0),
            delta3.mean(axis=0),
        ]
    )
    terms = {"reconstruction": reconstruction, "weight_decay": weight_decay, "sparsity": sparsity}
    return reconstruction + weight_decay + sparsity, grad, terms


def notes_normalize(patches: np.ndarray) -> np.ndarray:
    """The notes' normalizeData on (m, n) rows: per-patch mean, 3·std of all values, clip, map."""
    x = patches.astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    pstd = 3 * x.std(ddof=1)  # MATLAB's std(patches(:))
    x = np.clip(x, -pstd, pstd) / pstd
    return (x + 1) * 0.4 + 0.1


def sample_gray_patches(images, count: int, size: int, seed: int) -> np.ndarray:
    """The notes' sampleIMAGES: an image uniformly, then a position uniformly; (count, size²)."""
    generator = np.random.default_rng(seed)
    out = np.empty((count, size * size))
    for k in range(count):
        image = images[generator.integers(len(images))]
        row = generator.integers(image.shape[0] - size + 1)
        col = generator.integers(image.shape[1] - size + 1)
        out[k] = image[row : row + size, col : col + size].ravel()
    return out


def matlab_column_major(matrix: np.ndarray) -> list[float]:
    """MATLAB's ``A(:)``, by hand: down the first column, then the second, ..."""
    matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
    if matrix.shape[0] == 1:  # a vector: b1(:) is the vector itself
        matrix = matrix.T
    values = []
    for column in range(matrix.shape[1]):
        for row in range(matrix.shape[0]):
            values.append(float(matrix[row, column]))
    return values


def starter_code_theta(W1, W2, b1, b2) -> np.ndarray:
    """The UFLDL starter code's ``theta = [W1(:) ; W2(:) ; b1(:) ; b2(:)]``, as a (p,) vector."""
    return np.array(
        matlab_column_major(W1) + matlab_column_major(W2) + matlab_column_major(b1) + matlab_column_major(b2)
    )


def notes_patch_vector(patch: np.ndarray) -> np.ndarray:
    """The notes' column of an (h, w, c) patch: ``[R(:); G(:); B(:)]``, each channel column-major."""
    patch = np.asarray(patch, dtype=np.float64)
    patch = patch[:, :, None] if patch.ndim == 2 else patch
    values = []
    for channel in range(patch.shape[2]):
        values += matlab_column_major(patch[:, :, channel])
    return np.array(values)


def matlab_reshape(vector: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """MATLAB's ``reshape(v, rows, cols)``, by hand: fill down each column in turn."""
    out = np.empty((rows, cols))
    for k, value in enumerate(np.asarray(vector, dtype=np.float64)):
        out[k % rows, k // rows] = value
    return out


def display_color_network(A: np.ndarray) -> np.ndarray:
    """The notes' ``displayColorNetwork.m`` ported line by line; A (3·dim², features), one column each.

    Returns the image I (rows·(dim+1)−1, cols·(dim+1)−1, 3) before ``imagesc``, in [0, 1]:
    tile k = i·cols + j at tile row i, tile column j, each channel over its own max |value|.
    """
    A = np.asarray(A, dtype=np.float64)
    if A.min() >= 0:
        A = A - A.mean()
    cols = int(round(np.sqrt(A.shape[1])))
    channel_size = A.shape[0] // 3
    dim = int(round(np.sqrt(channel_size)))
    dimp = dim + 1
    rows = -(-A.shape[1] // cols)
    planes = [A[k * channel_size : (k + 1) * channel_size, :] for k in range(3)]
    planes = [plane / np.max(np.abs(plane), axis=0) for plane in planes]
    image = np.ones((dim * rows + rows - 1, dim * cols + cols - 1, 3))
    for i in range(rows):
        for j in range(cols):
            k = i * cols + j
            if k >= A.shape[1]:
                break
            for channel in range(3):
                tile = matlab_reshape(planes[channel][:, k], dim, dim)
                image[i * dimp : i * dimp + dim, j * dimp : j * dimp + dim, channel] = tile
    return (image + 1) / 2
