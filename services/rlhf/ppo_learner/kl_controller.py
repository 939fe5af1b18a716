"""The KL coefficient beta of the reward `score - beta * KL(policy || reference)`.

Adaptive (Ziegler et al. 2019, section 2.2): a proportional controller moves
beta so the measured KL tracks a target,

    e = clip(KL / target - 1, -0.2, 0.2)
    beta <- beta * (1 + K_beta * e * n_steps / horizon)

so beta grows while the policy drifts too far from the reference and shrinks
while it stays close. Clipping e bounds the change per update; the horizon
sets how fast beta reacts (in samples). Fixed: beta never changes.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AdaptiveKLController:
    """beta that holds KL near `target` (nats per sequence)."""

    beta: float
    target: float
    horizon: int = 10_000
    """Samples over which a persistent error changes beta by a factor of about e^(0.2 * K_beta)."""
    gain: float = 1.0
    """K_beta in the update rule (Ziegler et al. use 0.1 for stylistic tasks with horizon 10k)."""
    min_beta: float = 1e-4
    max_beta: float = 10.0

    def update(self, kl: float, n_steps: int) -> float:
        """Update beta from the KL measured on the last batch of `n_steps` samples; returns it."""
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + self.gain * error * n_steps / self.horizon
        self.beta = min(max(self.beta, self.min_beta), self.max_beta)
        return self.beta

    def state_dict(self) -> dict:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        self.beta = float(state["beta"])


@dataclass
class FixedKLController:
    """A constant beta (for ablations and for comparing with trainers that have no controller)."""

    beta: float

    def update(self, kl: float, n_steps: int) -> float:
        return self.beta

    def state_dict(self) -> dict:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        self.beta = float(state["beta"])


KLController = AdaptiveKLController | FixedKLController


def make_kl_controller(
    kind: str, beta: float, target: float, horizon: int, gain: float = 1.0, min_beta: float = 1e-4
) -> KLController:
    if kind == "adaptive":
        # The floor never sits above the start: a run that starts low stays free to stay low.
        return AdaptiveKLController(beta=beta, target=target, horizon=horizon, gain=gain,
                                    min_beta=min(min_beta, beta))
    if kind == "fixed":
        return FixedKLController(beta=beta)
    raise ValueError(f"unknown KL controller {kind!r} (expected 'adaptive' or 'fixed')")
