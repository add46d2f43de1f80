"""Training objectives of the in-house model (Esser et al. 2024, sections 2-3).

Every objective noises data the same way, z_t = a_t x0 + b_t eps with eps ~ N(0, I), and regresses the
network output onto a target with a plain mean squared error:

    rectified flow ("rf/..."):  a_t = 1 - t, b_t = t, the network predicts the velocity v = eps - x0;
        t is drawn from a density pi(t) (uniform, logit-normal, mode, cosmap). In the paper's unified loss
        this is the weighting w_t = t / (1 - t) * pi(t) on the eps-loss (its eq. 13 and section 3.1).
    eps-prediction ("eps/..."):  standard DDPM training (Ho et al. 2020) on 1000 discrete steps n,
        a_n = sqrt(alpha_bar_n), b_n = sqrt(1 - alpha_bar_n), the network predicts eps, n uniform, weight 1.
        "eps/linear" is LDM's scaled-linear schedule (betas from 0.00085 to 0.012, the paper's LDM-Linear),
        "eps/cos" the cosine schedule of Nichol & Dhariwal 2021. The network sees t = n / 1000, so its
        timestep embedding (of t * 1000) is the integer step, as in Stable Diffusion.

Objectives are named as in the paper's tables: "rf/uniform", "rf/lognorm(0.00,1.00)", "rf/mode(1.29)",
"rf/cosmap", "eps/linear", "eps/cos"; `make_objective(name)` parses a name, `training_loss` does one step.
The name is what a checkpoint records (recipe["objective"]) and what selects the sampler.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_OBJECTIVE = "rf/lognorm(0.00,1.00)"


def _uniform(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------
# Timestep densities for rectified flow: t in (0, 1), t = 1 is pure noise.


@dataclass(frozen=True)
class UniformTimesteps:
    """pi(t) = 1 on [0, 1]."""

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return _uniform(n, generator)

    def density(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t, dtype=torch.float64)

    def cdf(self, t: torch.Tensor) -> torch.Tensor:
        return t.double().clamp(0, 1)

    @property
    def name(self) -> str:
        return "uniform"


@dataclass(frozen=True)
class LogitNormalTimesteps:
    """t = sigmoid(m + s * n), n ~ N(0, 1): pi(t) = 1 / (s sqrt(2 pi)) / (t (1 - t)) exp(-(logit t - m)^2 / 2s^2)."""

    m: float = 0.0  # location: m > 0 puts more weight on noisier t
    s: float = 1.0  # scale: small s concentrates t around sigmoid(m)

    def __post_init__(self):
        if self.s <= 0:
            raise ValueError(f"logit-normal scale s must be > 0, got {self.s}")

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        normal = torch.randn(n, generator=generator, device=generator.device, dtype=torch.float32)
        return torch.sigmoid(self.m + self.s * normal)

    def density(self, t: torch.Tensor) -> torch.Tensor:
        t = t.double()
        logit = torch.log(t) - torch.log1p(-t)
        return torch.exp(-((logit - self.m) ** 2) / (2 * self.s**2)) / (self.s * math.sqrt(2 * math.pi) * t * (1 - t))

    def cdf(self, t: torch.Tensor) -> torch.Tensor:
        t = t.double()
        z = (torch.log(t) - torch.log1p(-t) - self.m) / self.s
        return 0.5 * (1 + torch.erf(z / math.sqrt(2)))

    def quantile(self, q: torch.Tensor) -> torch.Tensor:
        """sigmoid(m + s * Phi^-1(q))."""
        return torch.sigmoid(self.m + self.s * math.sqrt(2) * torch.erfinv(2 * q.double() - 1))

    @property
    def name(self) -> str:
        return f"lognorm({self.m:.2f},{self.s:.2f})"


@dataclass(frozen=True)
class ModeTimesteps:
    """t = f_mode(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u), u ~ U(0, 1); pi(t) = |d f_mode^-1(t) / dt|.

    s = 0 is uniform, s > 0 puts more weight on the middle of [0, 1], s < 0 on the ends. f_mode is
    strictly decreasing (a density) for -1 <= s <= 2 / (pi - 2)."""

    s: float = 1.29  # the paper's best value

    def __post_init__(self):
        if not -1.0 <= self.s <= 2.0 / (math.pi - 2.0):
            raise ValueError(f"mode scale s must be in [-1, 2/(pi-2)] = [-1, 1.752], got {self.s}")

    def f_mode(self, u: torch.Tensor) -> torch.Tensor:
        return 1 - u - self.s * (torch.cos(math.pi / 2 * u) ** 2 - 1 + u)

    def f_mode_derivative(self, u: torch.Tensor) -> torch.Tensor:
        return -1 - self.s + self.s * math.pi / 2 * torch.sin(math.pi * u)

    def inverse(self, t: torch.Tensor) -> torch.Tensor:
        """u with f_mode(u) = t, by bisection (f_mode falls from 1 at u = 0 to 0 at u = 1)."""
        t = t.double()
        lo, hi = torch.zeros_like(t), torch.ones_like(t)
        for _ in range(60):
            mid = (lo + hi) / 2
            above = self.f_mode(mid) > t  # the root lies right of mid
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return (lo + hi) / 2

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.f_mode(_uniform(n, generator)).clamp(0, 1)

    def density(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 / self.f_mode_derivative(self.inverse(t)).abs()

    def cdf(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - self.inverse(t.clamp(0, 1))  # P(f(U) <= t) = P(U >= f^-1(t))

    @property
    def name(self) -> str:
        return f"mode({self.s:.2f})"


@dataclass(frozen=True)
class CosMapTimesteps:
    """t = 1 - 1 / (tan(pi u / 2) + 1), u ~ U(0, 1): pi(t) = 2 / (pi - 2 pi t + 2 pi t^2).

    The rectified-flow counterpart of the cosine schedule (its log-SNR matches cosine's)."""

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return 1 - 1 / (torch.tan(math.pi / 2 * _uniform(n, generator)) + 1)

    def density(self, t: torch.Tensor) -> torch.Tensor:
        t = t.double()
        return 2 / (math.pi - 2 * math.pi * t + 2 * math.pi * t**2)

    def cdf(self, t: torch.Tensor) -> torch.Tensor:
        t = t.double().clamp(0, 1)
        return 2 / math.pi * torch.atan2(t, 1 - t)  # u = (2/pi) atan(t / (1 - t))

    @property
    def name(self) -> str:
        return "cosmap"


TimestepDensity = UniformTimesteps | LogitNormalTimesteps | ModeTimesteps | CosMapTimesteps


# ----------------------------------------------------------------------------------------------------------
# Noise schedules of the eps-prediction ablations: alpha_bar_n for n = 0 .. 999.


def linear_alphas_cumprod(num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012):
    """LDM's "scaled linear" schedule: sqrt(beta) linear from sqrt(beta_start) to sqrt(beta_end)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


def cosine_alphas_cumprod(num_steps: int = 1000, offset: float = 0.008, max_beta: float = 0.999):
    """Nichol & Dhariwal's cosine schedule: alpha_bar(tau) = f(tau) / f(0), f(tau) = cos^2((tau + o) / (1 + o)
    pi/2), discretised as betas_n = min(1 - alpha_bar((n+1)/N) / alpha_bar(n/N), 0.999)."""

    def f(tau: torch.Tensor) -> torch.Tensor:
        return torch.cos((tau + offset) / (1 + offset) * math.pi / 2) ** 2

    tau = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    betas = (1 - f(tau[1:]) / f(tau[:-1])).clamp(max=max_beta)
    return torch.cumprod(1 - betas, dim=0)


# ----------------------------------------------------------------------------------------------------------
# Objectives


def _per_sample(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) in x's dtype, to broadcast over an image batch."""
    return t.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class RectifiedFlow:
    """z_t = (1 - t) x0 + t eps, target v = eps - x0, t ~ density."""

    density: TimestepDensity
    prediction = "velocity"

    @property
    def name(self) -> str:
        return f"rf/{self.density.name}"

    def sample_t(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.density.sample(n, generator)

    def make_noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = _per_sample(t, x0)
        return (1 - t) * x0 + t * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return noise - x0

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(prediction.float(), target.float())


@dataclass(frozen=True)
class EpsPrediction:
    """DDPM: n ~ U{0..N-1}, z_n = sqrt(alpha_bar_n) x0 + sqrt(1 - alpha_bar_n) eps, target eps.

    The network is given t = n / N; `step_index` maps it back."""

    schedule: str  # "linear" (LDM scaled linear) or "cos" (Nichol & Dhariwal)
    num_train_steps: int = 1000
    beta_start: float = 0.00085  # "linear": the first and the last beta of the scaled-linear schedule
    beta_end: float = 0.012
    prediction = "eps"

    def __post_init__(self):
        if self.schedule not in ("linear", "cos"):
            raise ValueError(f"eps schedule must be 'linear' or 'cos', got {self.schedule!r}")

    @property
    def name(self) -> str:
        return f"eps/{self.schedule}"

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """(N,) float64 alpha_bar_n."""
        if self.schedule == "linear":
            return linear_alphas_cumprod(self.num_train_steps, self.beta_start, self.beta_end)
        return cosine_alphas_cumprod(self.num_train_steps)

    def step_index(self, t: torch.Tensor) -> torch.Tensor:
        return (t.double() * self.num_train_steps).round().long().clamp(0, self.num_train_steps - 1)

    def sample_t(self, n: int, generator: torch.Generator) -> torch.Tensor:
        steps = torch.randint(0, self.num_train_steps, (n,), generator=generator, device=generator.device)
        return steps.float() / self.num_train_steps

    def make_noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha_bar = self.alphas_cumprod[self.step_index(t.cpu())]  # (B,)
        return _per_sample(alpha_bar.sqrt(), x0) * x0 + _per_sample((1 - alpha_bar).sqrt(), x0) * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return noise

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(prediction.float(), target.float())


Objective = RectifiedFlow | EpsPrediction

_NUMBER = r"\s*(-?\d+(?:\.\d*)?)\s*"
OBJECTIVE_FORMS = ("rf/uniform", "rf/lognorm(m,s)", "rf/mode(s)", "rf/cosmap", "eps/linear", "eps/cos")


def make_objective(name: str) -> Objective:
    """Parse a paper-style objective name, e.g. "rf/lognorm(0.00,1.00)", "rf/mode(1.29)", "eps/linear"."""
    if not isinstance(name, str):
        raise TypeError(f"objective name must be a string, got {type(name).__name__}")
    text = name.strip().lower()
    if text == "rf/uniform":
        return RectifiedFlow(UniformTimesteps())
    if text == "rf/cosmap":
        return RectifiedFlow(CosMapTimesteps())
    if match := re.fullmatch(rf"rf/lognorm\({_NUMBER},{_NUMBER}\)", text):
        return RectifiedFlow(LogitNormalTimesteps(float(match[1]), float(match[2])))
    if match := re.fullmatch(rf"rf/mode\({_NUMBER}\)", text):
        return RectifiedFlow(ModeTimesteps(float(match[1])))
    if text in ("eps/linear", "eps/cos"):
        return EpsPrediction(text.split("/")[1])
    raise ValueError(f"unknown objective {name!r}; expected one of {', '.join(OBJECTIVE_FORMS)}")


def training_loss(
    model: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    cond: Mapping[str, torch.Tensor],
    objective: Objective | str,
    generator: torch.Generator,
) -> torch.Tensor:
    """One training loss: draw t and eps from `generator`, noise x0 (B, C, H, W), predict, mean squared error.

    `model(z_t, t, **cond)` is called with t (B,) in [0, 1]; cond holds the MMDiT's text inputs
    ({"context", "pooled"} and optionally "context_mask"). Draws happen on the generator's device and are
    moved to x0's, so a CPU generator gives the same draws whatever device trains."""
    obj = make_objective(objective) if isinstance(objective, str) else objective
    t = obj.sample_t(x0.shape[0], generator).to(x0.device)  # (B,)
    noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=torch.float32)
    noise = noise.to(device=x0.device, dtype=x0.dtype)
    z_t = obj.make_noisy(x0, noise, t)
    return obj.loss(model(z_t, t, **cond), obj.target(x0, noise, t))
