"""Gaussian MLP policy and value network (64-64 tanh, orthogonal initialisation).

Covariances follow the library's convention: a diagonal covariance is a vector of variances
``(..., d)``, a full one a matrix ``(..., d, d)``. A non-contextual covariance has leading batch
shape ``(1,)`` and broadcasts against the means.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_2PI = math.log(2.0 * math.pi)


def inv_softplus(y: torch.Tensor) -> torch.Tensor:
    """Inverse of ``softplus``: ``x`` with ``log(1 + exp(x)) = y`` for ``y > 0``."""
    return y + torch.log(-torch.expm1(-y))


def mlp(sizes: list[int], activation: str, out_gain: float) -> nn.Sequential:
    """MLP ``sizes[0] -> ... -> sizes[-1]`` with orthogonal weights (gain sqrt(2) hidden,
    ``out_gain`` for the last layer) and zero biases, as in the original PPO code."""
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        last = i == len(sizes) - 2
        nn.init.orthogonal_(lin.weight, gain=out_gain if last else math.sqrt(2.0))
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if not last:
            layers.append(act())
    return nn.Sequential(*layers)


class ValueNet(nn.Module):
    """State-value network ``V(s)``: obs ``(B, obs_dim)`` -> ``(B,)``."""

    def __init__(self, obs_dim: int, hidden: list[int], activation: str = "tanh") -> None:
        super().__init__()
        self.net = mlp([obs_dim, *hidden, 1], activation, out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Values, shape ``(B,)``."""
        return self.net(obs).squeeze(-1)


class GaussianPolicy(nn.Module):
    """Gaussian MLP policy ``pi(a|s) = N(mu(s), Sigma(s))``.

    Args:
        obs_dim, act_dim: sizes.
        hidden: hidden layer sizes (e.g. ``[64, 64]``).
        activation: ``tanh`` or ``relu``.
        cov_type: ``diag`` (variances) or ``full`` (Cholesky factor ``L``, ``Sigma = L L^T``).
        contextual: covariance from a linear head on the last hidden layer (state-dependent)
            instead of a free parameter.
        init_std: initial standard deviation; min_std: added to every std / diagonal of ``L``.

    ``forward(obs)`` returns ``(mean (B, d), cov)`` with ``cov`` of shape ``(B, d)``/``(B, d, d)``
    if contextual, else ``(1, d)``/``(1, d, d)``.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: list[int],
        activation: str = "tanh",
        cov_type: str = "diag",
        contextual: bool = False,
        init_std: float = 1.0,
        min_std: float = 1e-5,
    ) -> None:
        super().__init__()
        if cov_type not in ("diag", "full"):
            raise ValueError(f"cov_type must be 'diag' or 'full', got {cov_type!r}")
        if init_std <= min_std:
            raise ValueError("init_std must exceed min_std")
        self.act_dim = act_dim
        self.diag = cov_type == "diag"
        self.contextual = contextual
        self.min_std = min_std
        # len(hidden) hidden layers, each Linear + activation (the mean head is the output layer)
        self.body = mlp([obs_dim, *hidden], activation, out_gain=math.sqrt(2.0))
        self.body.append({"tanh": nn.Tanh, "relu": nn.ReLU}[activation]())
        self.mean_head = nn.Linear(hidden[-1], act_dim)
        nn.init.orthogonal_(self.mean_head.weight, gain=0.01)
        nn.init.zeros_(self.mean_head.bias)
        n_cov = act_dim if self.diag else act_dim * (act_dim + 1) // 2
        raw0 = float(inv_softplus(torch.tensor(init_std - min_std, dtype=torch.float64)))
        init = torch.zeros(n_cov)
        init[:act_dim] = raw0  # diagonal entries come first
        if contextual:
            self.cov_head = nn.Linear(hidden[-1], n_cov)
            nn.init.orthogonal_(self.cov_head.weight, gain=0.01)
            with torch.no_grad():
                self.cov_head.bias.copy_(init)
        else:
            self.cov_param = nn.Parameter(init)
        rows, cols = torch.tril_indices(act_dim, act_dim, offset=-1)
        self.register_buffer("_tril_rows", rows, persistent=False)
        self.register_buffer("_tril_cols", cols, persistent=False)

    def _cov_from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        d = self.act_dim
        std = nn.functional.softplus(raw[..., :d]) + self.min_std
        if self.diag:
            return std * std
        chol = _fill_tril(torch.diag_embed(std), raw[..., d:], self._tril_rows, self._tril_cols)
        return chol @ chol.transpose(-1, -2)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean (B, d), cov)``; see the class docstring for the covariance shape."""
        h = self.body(obs)
        mean = self.mean_head(h)
        raw = self.cov_head(h) if self.contextual else self.cov_param.unsqueeze(0)
        return mean, self._cov_from_raw(raw)

    @torch.no_grad()
    def set_cov(self, cov: torch.Tensor) -> None:
        """Set the non-contextual covariance parameter so that the policy's covariance is ``cov``
        (``(d,)`` variances or ``(d, d)``), e.g. to the projected one after an iteration."""
        if self.contextual:
            raise ValueError("set_cov needs a non-contextual covariance")
        d = self.act_dim
        cov = cov.to(self.cov_param.dtype)
        if self.diag:
            std = cov.reshape(d).clamp_min(0).sqrt()
            raw = inv_softplus((std - self.min_std).clamp_min(1e-12))
        else:
            chol = torch.linalg.cholesky(cov.reshape(d, d))
            diag = inv_softplus((torch.diagonal(chol) - self.min_std).clamp_min(1e-12))
            raw = torch.cat([diag, chol[self._tril_rows, self._tril_cols]])
        self.cov_param.copy_(raw)


def _fill_tril(
    chol: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """Return ``chol`` with its strictly lower triangle set to ``values (..., d(d-1)/2)``."""
    d = chol.shape[-1]
    flat = torch.zeros(*values.shape[:-1], d * d, dtype=chol.dtype, device=chol.device)
    flat = flat.index_copy(-1, rows * d + cols, values)
    return chol + flat.reshape(*values.shape[:-1], d, d)


def gaussian_log_prob(
    actions: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, diag: bool
) -> torch.Tensor:
    """``log N(a; mean, cov)`` per state, shape ``(B,)``; cov broadcasts against mean."""
    d = mean.shape[-1]
    diff = actions - mean
    if diag:
        return -0.5 * ((diff * diff / cov).sum(-1) + torch.log(cov).sum(-1) + d * LOG_2PI)
    chol = torch.linalg.cholesky(cov)
    chol = chol.expand(*diff.shape[:-1], d, d)
    z = torch.linalg.solve_triangular(chol, diff.unsqueeze(-1), upper=False).squeeze(-1)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * ((z * z).sum(-1) + logdet + d * LOG_2PI)


def gaussian_entropy(cov: torch.Tensor, diag: bool) -> torch.Tensor:
    """Entropy ``0.5 d log(2 pi e) + 0.5 log|cov|`` per state, shape ``(...)``."""
    d = cov.shape[-1]
    logdet = torch.log(cov).sum(-1) if diag else torch.linalg.slogdet(cov)[1]
    return 0.5 * d * (LOG_2PI + 1.0) + 0.5 * logdet
