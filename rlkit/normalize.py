"""Per-feature running mean and variance, to put an encoder's inputs on one scale.

An encoder's inputs can differ in scale by an order of magnitude (Pendulum's angular velocity
spans [-8, 8] and its reward [-16.3, 0], beside actions in [-2, 2]); a recurrent cell's gates
saturate on large inputs. :class:`RunningNorm` keeps the mean and variance of the values it is
shown (Chan et al.'s parallel update, as Stable-Baselines3's ``RunningMeanStd``) and maps ``x``
to ``clip((x - mean) / sqrt(var + eps), -clip, clip)``.

Who shows it values decides what training sees: the training loop (:class:`rlkit.trainer.Trainer`,
through the agent's ``observe_inputs``) shows it only the steps before learning starts, so the
statistics are fixed while the agent learns, as its weights are between two updates. An episode
that starts after that is normalised alike when acted and when trained on (train == act, as
without it). Steps acted while the statistics still moved (the random-action steps, and the rest
of an episode in progress when learning starts) are replayed with the fixed statistics, as every
step is replayed with the current weights; so are recurrent states stored then, which a burn-in
refreshes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RunningNorm(nn.Module):
    """Running mean and variance of ``dim`` features; calling it normalises ``(..., dim)``.

    The statistics start at mean 0 and variance 1 with a weight of 0 rows: an unshown norm is
    the identity, and the first values shown replace them.

    Args:
        dim: number of features (the last axis).
        clip: normalised values are clipped to ``[-clip, clip]``.
        eps: added to the variance before its square root.

    Raises:
        ValueError: ``dim`` not a positive integer, ``clip`` or ``eps`` not positive.
    """

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not clip > 0 or not eps > 0:
            raise ValueError(f"clip and eps must be > 0, got clip={clip!r}, eps={eps!r}")
        self.dim, self.clip, self.eps = dim, float(clip), float(eps)
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(0.0, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Add the rows of ``x`` ``(N, dim)`` to the statistics.

        Raises:
            ValueError: ``x`` not of shape ``(N, dim)``, or holding a non-finite value (it
                would make every later input NaN).
        """
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"values must have shape (N, {self.dim}), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            return
        x = x.to(self.mean.device, torch.float64)
        if not (finite := torch.isfinite(x)).all():
            row, col = (~finite).nonzero()[0].tolist()
            raise ValueError(f"values to normalise by must be finite, got {x[row, col].item()} "
                             f"in row {row}, feature {col}")
        n = x.shape[0]
        mean, var = x.mean(0), x.var(0, unbiased=False)  # (dim,)
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta.square() * self.count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(..., dim)`` normalised and clipped, in ``x``'s dtype. A feature whose
        variance is at most ``eps`` (constant in what was shown, as a sparse reward that stayed
        0) is centred only: scaled by its tiny spread, any later change would hit the clip."""
        mean = self.mean.to(x.dtype)
        spread = self.var > self.eps * (1.0 + self.mean.square())
        std = torch.where(spread, torch.sqrt(self.var + self.eps), 1.0).to(x.dtype)
        return ((x - mean) / std).clamp(-self.clip, self.clip)


__all__ = ["RunningNorm"]
