"""Generalised advantage estimation with correct handling of time-limit truncation."""

from __future__ import annotations

import numpy as np


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    lam: float,
    zero_delta: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and value targets by GAE (Schulman et al., 2016), time-major.

    For step ``t`` of each environment, with ``V'_t`` the value of the state that step ``t``
    actually reached (``next_values``: the final observation's value where the episode was
    truncated, ``V(s_{t+1})`` otherwise):

        delta_t = r_t + gamma * (1 - terminated_t) * V'_t - V(s_t)
        A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1},   done = terminated | truncated

    so a terminal state is worth 0, a truncated episode bootstraps from its final observation,
    and no advantage flows across an episode boundary. ``A_T = 0`` after the last step.

    Args:
        rewards, values, next_values: ``(T, N)``.
        terminated, truncated: ``(T, N)`` booleans.
        gamma: discount in ``[0, 1]``. lam: GAE lambda in ``[0, 1]``.
        zero_delta: ``(T, N)`` booleans: steps whose TD error is set to 0 (the authors'
            released code does so for truncated steps, which then get advantage 0 and their
            own value as target; earlier steps of the episode stop there too).

    Returns:
        ``(advantages, returns)`` with ``returns = advantages + values``, both ``(T, N)`` float64.

    Raises:
        ValueError: if shapes differ or gamma/lam are outside ``[0, 1]``.
    """
    shape = np.shape(rewards)
    for name, arr in (
        ("values", values),
        ("next_values", next_values),
        ("terminated", terminated),
        ("truncated", truncated),
    ):
        if np.shape(arr) != shape:
            raise ValueError(f"{name} has shape {np.shape(arr)}, expected {shape} like rewards")
    if len(shape) != 2:
        raise ValueError(f"rewards must be (T, N), got shape {shape}")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1], got {gamma}, {lam}")
    term = np.asarray(terminated, bool)
    cont = ~(term | np.asarray(truncated, bool))
    delta = (
        np.asarray(rewards, np.float64)
        + gamma * np.where(term, 0.0, next_values)
        - np.asarray(values, np.float64)
    )
    if zero_delta is not None:
        if np.shape(zero_delta) != shape:
            raise ValueError(f"zero_delta has shape {np.shape(zero_delta)}, expected {shape}")
        delta = np.where(zero_delta, 0.0, delta)
    adv = np.zeros(shape, np.float64)
    last = np.zeros(shape[1], np.float64)
    for t in range(shape[0] - 1, -1, -1):
        last = delta[t] + gamma * lam * cont[t] * last
        adv[t] = last
    return adv, adv + values
