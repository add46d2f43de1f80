"""Style control: the leaderboard of one criterion with and without per-image covariates that a model could
win votes on without being better at the question (brightness, colourfulness, sharpness, text, ...).

The model is Bradley-Terry with covariates, as LMArena's style control does for answer length and markdown:
for a vote between image A of model a and image B of model b,

    P(A is preferred) = sigmoid(theta_a - theta_b + beta . (z_A - z_B))

with z the image's covariates standardised over the images in the votes (mean 0, SD 1), so beta_c is the
change in log-odds of winning per standard deviation of covariate c. Ties and "both bad" count as half a
win for each side (the quasi-likelihood of analysis/bradley_terry.py). theta is then a model's strength at
equal style; the plain leaderboard is the same fit without covariates, so both have Wald intervals of the
same kind (sandwich by default) and can be read side by side.

Covariates are prepared before the fit (`prepare_covariates`):
* sharpness, pixels and generation_seconds are log-transformed (their spread is multiplicative);
* a missing value (an imported image has no generation time) gets the mean, i.e. z = 0; counted;
* a covariate that is the same for every image is left out ("constant"), and so is one that the model
  identity explains almost entirely (R^2 >= CONFOUNDED_R2 over the images; e.g. a generation time that
  is a property of the model): its effect and the models' strengths cannot be told apart, and the ridge
  alone would choose the split. Each left-out covariate is reported with its reason.

May import numpy, pandas, scipy and analysis.votes, newton, bradley_terry, intervals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from analysis.bradley_terry import DEFAULT_RIDGE, ELO_PER_NAT, elo_score, sigmoid
from analysis.intervals import normal_bounds
from analysis.newton import constrained_inverse, newton, single_blas_thread
from analysis.votes import check_single_criterion, require_columns, select_votes

COVARIATES = (
    "brightness",
    "saturation",
    "colourfulness",
    "sharpness",
    "pixels",
    "text_present",
    "generation_seconds",
)
LOG_COVARIATES = frozenset({"sharpness", "pixels", "generation_seconds"})  # fitted on log(value + 1)
CONFOUNDED_R2 = 0.99  # a covariate this well explained by the model identity is left out
INTERVALS = ("sandwich", "fisher")
SCORE_OF_WINNER = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5, "both_bad": 0.5}


@dataclass
class StyleControl:
    """The two leaderboards and the covariate effects of one criterion (see `fit_style_control`)."""

    leaderboard: pd.DataFrame  # indexed by model, best with control first: score, lower, upper, rank (with
    #   control) and plain_score, plain_lower, plain_upper, plain_rank (without), shift = score - plain_score
    effects: pd.DataFrame  # indexed by covariate: coefficient (log-odds per SD), lower, upper, elo_per_sd,
    #   p_value, sd (of the covariate as fitted, after any log), missing (images without a value)
    left_out: dict[str, str] = field(default_factory=dict)  # covariate -> why it is not in the fit
    n_votes: int = 0
    n_images: int = 0
    confidence: float = 0.95
    intervals: str = "sandwich"


@dataclass
class Covariates:
    """Standardised covariates of the images in the votes."""

    names: list[str]  # covariates in the fit
    z: pd.DataFrame  # indexed by image, one column per name, mean 0 and SD 1
    sd: dict[str, float]  # SD of each covariate (after the log) before standardising
    missing: dict[str, int]  # images without a value, per covariate in the fit
    left_out: dict[str, str]  # covariate -> reason


def prepare_covariates(
    covariates: pd.DataFrame, columns: Iterable[str], model_of_image: Mapping | None = None
) -> Covariates:
    """Standardise `columns` of `covariates` (one row per image); see the module docstring for the rules.

    model_of_image: image -> model, to leave out covariates that the model identity explains."""
    names, sd, missing, left_out = [], {}, {}, {}
    z = pd.DataFrame(index=covariates.index)
    for name in columns:
        if name not in covariates.columns:
            left_out[name] = "not measured"
            continue
        values = pd.to_numeric(covariates[name], errors="coerce").astype(float)
        if name in LOG_COVARIATES:
            values = np.log1p(values.clip(lower=0))
        known = values.dropna()
        if known.empty:
            left_out[name] = "not measured"
            continue
        if len(known) < 2 or float(known.std(ddof=0)) <= 1e-12 * max(1.0, float(known.abs().max())):
            left_out[name] = "the same for every image"
            continue
        if model_of_image is not None:
            r2 = _share_explained_by_model(known, model_of_image)
            if r2 >= CONFOUNDED_R2:
                left_out[name] = f"explained by the model itself (R² = {r2:.3f}): cannot be told apart from strength"
                continue
        mean, spread = float(known.mean()), float(known.std(ddof=0))
        z[name] = ((values - mean) / spread).fillna(0.0)
        names.append(name)
        sd[name] = spread
        missing[name] = int(values.isna().sum())
    return Covariates(names, z, sd, missing, left_out)


def _share_explained_by_model(values: pd.Series, model_of_image: Mapping) -> float:
    """R^2 of a covariate on the model identity (one-way ANOVA) over the images that have a value."""
    models = values.index.map(lambda image: model_of_image.get(image))
    total = float(((values - values.mean()) ** 2).sum())
    within = float(((values - values.groupby(models).transform("mean")) ** 2).sum())
    return 1.0 - within / total if total > 0 else 1.0


def fit_style_control(
    votes: pd.DataFrame,
    covariates: pd.DataFrame,
    *,
    columns: Iterable[str] = COVARIATES,
    image_columns: tuple[str, str] = ("image_left", "image_right"),
    intervals: str = "sandwich",
    confidence: float = 0.95,
    exclude_raters: Iterable[str] | None = None,
    ridge: float = DEFAULT_RIDGE,
) -> StyleControl:
    """Leaderboards of one criterion with and without style control, and each covariate's effect.

    votes: the vote table (analysis/votes.py) with the images shown: image_columns name the columns holding
    model_a's and model_b's image ids (the site's vote table: image_left, image_right). Gold checks and
    `exclude_raters` are left out as in fit_bradley_terry.
    covariates: one row per image id (the index) with the covariate columns, e.g. COVARIATES.
    intervals: "sandwich" (robust; the default) or "fisher" (inverse information), Wald at `confidence`.
    """
    if intervals not in INTERVALS:
        raise ValueError(f"intervals must be one of {INTERVALS}, got {intervals!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    votes = select_votes(votes, exclude_raters=exclude_raters)
    check_single_criterion(votes)
    require_columns(votes, image_columns, "fit_style_control")
    image_a, image_b = (votes[c].to_numpy() for c in image_columns)
    unknown = (set(image_a) | set(image_b)) - set(covariates.index)
    if unknown:
        raise ValueError(f"{len(unknown)} image(s) of the votes have no covariates row, e.g. {sorted(unknown)[:3]}")
    models = sorted(set(votes["model_a"]) | set(votes["model_b"]))
    if len(models) < 2:
        raise ValueError("style control needs votes on at least 2 models")
    index = {m: n for n, m in enumerate(models)}
    a = votes["model_a"].map(index).to_numpy()
    b = votes["model_b"].map(index).to_numpy()
    y = votes["winner"].map(SCORE_OF_WINNER).to_numpy(dtype=float)

    shown = pd.Index(np.concatenate([image_a, image_b])).unique()
    model_of_image = dict(zip(image_a, votes["model_a"], strict=True)) | dict(
        zip(image_b, votes["model_b"], strict=True)
    )
    prepared = prepare_covariates(covariates.loc[shown], columns, model_of_image)
    x = prepared.z.loc[image_a].to_numpy() - prepared.z.loc[image_b].to_numpy()  # (N, C)
    prepared, x = _drop_covariates_no_pair_differs_on(prepared, x)

    k = len(models)
    plain, plain_cov = _fit(a, b, y, np.zeros((len(y), 0)), k, ridge, intervals)
    point, cov = _fit(a, b, y, x, k, ridge, intervals)
    bounds = normal_bounds(elo_score(point[:k]), np.sqrt(np.diag(cov)[:k]), confidence, scale=ELO_PER_NAT)
    plain_bounds = normal_bounds(elo_score(plain), np.sqrt(np.diag(plain_cov)), confidence, scale=ELO_PER_NAT)
    table = pd.DataFrame(
        {
            "score": elo_score(point[:k]),
            "lower": bounds[0],
            "upper": bounds[1],
            "rank": _rank(*bounds),
            "plain_score": elo_score(plain),
            "plain_lower": plain_bounds[0],
            "plain_upper": plain_bounds[1],
            "plain_rank": _rank(*plain_bounds),
        },
        index=pd.Index(models, name="model"),
    )
    table["shift"] = table["score"] - table["plain_score"]
    table = table.sort_values("score", ascending=False)
    return StyleControl(
        leaderboard=table,
        effects=_effects(prepared, point[k:], cov[k:, k:], confidence),
        left_out=prepared.left_out,
        n_votes=len(y),
        n_images=len(shown),
        confidence=confidence,
        intervals=intervals,
    )


def _drop_covariates_no_pair_differs_on(prepared: Covariates, x: np.ndarray) -> tuple[Covariates, np.ndarray]:
    """A covariate that varies between prompts but never between the two images of a pair (text in every
    image of the word prompts, none elsewhere) has no vote that could show its effect: leave it out."""
    keep = np.abs(x).max(axis=0, initial=0.0) > 1e-12
    if keep.all():
        return prepared, x
    names = [name for name, kept in zip(prepared.names, keep, strict=True) if kept]
    left_out = dict(prepared.left_out)
    for name in set(prepared.names) - set(names):
        left_out[name] = "the same for both images of every pair"
    return (
        Covariates(
            names,
            prepared.z[names],
            {name: prepared.sd[name] for name in names},
            {name: prepared.missing[name] for name in names},
            left_out,
        ),
        x[:, keep],
    )


def _rank(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """1 + the number of models whose lower bound is above this model's upper bound (as the leaderboard)."""
    return 1 + (lower[None, :] > upper[:, None]).sum(axis=1)


def _effects(prepared: Covariates, beta: np.ndarray, cov: np.ndarray, confidence: float) -> pd.DataFrame:
    se = np.sqrt(np.diag(cov)) if len(beta) else np.zeros(0)
    lower, upper = normal_bounds(beta, se, confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_value = 2 * stats.norm.sf(np.abs(beta / se))
    return pd.DataFrame(
        {
            "coefficient": beta,
            "lower": lower,
            "upper": upper,
            "elo_per_sd": ELO_PER_NAT * beta,
            "p_value": p_value,
            "sd": [prepared.sd[n] for n in prepared.names],
            "log_scale": [n in LOG_COVARIATES for n in prepared.names],
            "missing": [prepared.missing[n] for n in prepared.names],
        },
        index=pd.Index(prepared.names, name="covariate"),
    )


# --------------------------------------------------------------------------------------------------
# The fit: vote-level logistic Bradley-Terry with covariates, Newton from analysis/newton.py
# --------------------------------------------------------------------------------------------------


def _design(a: np.ndarray, b: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """(N, K + C) rows [e_a - e_b, x]: the linear predictor is design @ [theta, beta]."""
    design = np.zeros((len(a), k + x.shape[1]))
    rows = np.arange(len(a))
    design[rows, a] = 1.0
    design[rows, b] = -1.0
    design[:, k:] = x
    return design


def _fit(
    a: np.ndarray, b: np.ndarray, y: np.ndarray, x: np.ndarray, k: int, ridge: float, intervals: str
) -> tuple[np.ndarray, np.ndarray]:
    """Point fit [theta (K, centred), beta (C)] and its covariance (sum-to-zero on theta)."""
    design = _design(a, b, x, k)  # (N, P)

    def objective(params: np.ndarray, ids: np.ndarray) -> np.ndarray:
        eta = params @ design.T  # (B, N)
        nll = (np.logaddexp(0.0, eta) - y * eta).sum(axis=1)  # -[y log s(eta) + (1 - y) log s(-eta)]
        return nll + 0.5 * ridge * (params**2).sum(axis=1)

    def grad_hess(params: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = sigmoid(params @ design.T)  # (B, N)
        grad = (p - y) @ design + ridge * params
        weight = p * (1.0 - p)
        hess = np.einsum("bn,np,nq->bpq", weight, design, design) + ridge * np.eye(design.shape[1])
        return grad, hess

    params = newton(objective, grad_hess, np.zeros((1, design.shape[1])), k)[0]
    p = sigmoid(design @ params)
    with single_blas_thread():
        information = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(design.shape[1])
        bread = constrained_inverse(information, k, ridge)
        if intervals == "fisher":
            return params, bread
        scores = design * (p - y)[:, None]  # (N, P) per-vote gradients
        return params, bread @ (scores.T @ scores) @ bread
