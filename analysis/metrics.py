"""Automated image metrics through torchmetrics: CLIP score, FID, and their rank agreement with humans.

Pure PyTorch / torchmetrics: no Django, no model code. Models come in as arguments:

    # CLIP score: a callable returning (model, processor), torchmetrics' "callable route".
    # A transformers CLIPModel saved in a local folder:
    score = clip_score(images, prompts, clip_from_directory("/models/clip-vit-base-patch32"))
    # FID on CLIP image features (what the SD3 paper reports), or on Inception features:
    value = fid(real_images, fake_images, ClipImageFeatures(*clip_from_directory(path)()))
    value = fid(real_images, fake_images, inception_features("/weights/pt_inception-2015-12-05.pth"))
    # rank agreement of a metric with the human Bradley-Terry scores, one value per model:
    spearman_with_human({"a": 31.2, "b": 29.0, "c": 30.1}, {"a": 1040, "b": 950, "c": 1010})

Images are uint8 in [0, 255], either a torch tensor (N, 3, H, W) or a numpy array (N, H, W, 3); they are
handed to the processor / feature module unchanged (torchmetrics' CLIPScore processor would rescale floats
a second time, so floats are refused).

Why the callable route: torchmetrics 1.9.0's CLIPScore breaks with transformers 5, whose CLIPModel
`get_image_features` returns a ModelOutput instead of a tensor (torchmetrics issue 3407). `TensorFeatures`
wraps a CLIPModel so both feature methods return tensors again.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ModelAndProcessor = Callable[[], tuple[Any, Any]]


# --------------------------------------------------------------------------------------------- inputs


def as_uint8_nchw(images: torch.Tensor | np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """Images as a uint8 tensor (N, 3, H, W). Accepts (N, 3, H, W) tensors or (N, H, W, 3) arrays."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("no images given")
        images = np.stack([np.asarray(i) for i in images])
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"numpy images must be (N, H, W, 3), got shape {images.shape}")
        images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor or numpy array, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"image tensors must be (N, 3, H, W), got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 in [0, 255], got {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("no images given")
    return images.contiguous()


def _features_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"feature method returned {type(out).__name__}, not a tensor or an output with pooler_output")


# --------------------------------------------------------------------------------------------- CLIP models


class TensorFeatures(nn.Module):
    """A CLIP-compatible model whose get_image_features / get_text_features always return tensors.

    transformers 5 returns BaseModelOutputWithPooling (projected features in `.pooler_output`); this is
    what torchmetrics' CLIPScore needs until it handles that (torchmetrics issue 3407)."""

    model: Any  # a transformers CLIPModel, or any module with its two feature methods (nn.Module's typing
    #   would make those methods `Tensor | Module` attributes)

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.config = getattr(model, "config", None)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _features_tensor(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return _features_tensor(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def clip_from_directory(path: str | Path, device: str = "cpu") -> ModelAndProcessor:
    """Callable returning (model, processor) for a transformers CLIPModel saved in a local folder."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no CLIP model at {path} (config.json missing)")

    def load() -> tuple[TensorFeatures, Any]:
        from transformers import CLIPModel, CLIPProcessor

        model = CLIPModel.from_pretrained(path, local_files_only=True).eval().to(device)
        processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
        return TensorFeatures(model), processor

    return load


def _as_model_and_processor(model_and_processor) -> ModelAndProcessor:
    if callable(model_and_processor) and not isinstance(model_and_processor, nn.Module):
        return model_and_processor
    if isinstance(model_and_processor, (tuple, list)) and len(model_and_processor) == 2:
        model, processor = model_and_processor
        return lambda: (model, processor)
    raise TypeError("model_and_processor must be a callable returning (model, processor) or such a pair")


# --------------------------------------------------------------------------------------------- CLIP score


@torch.no_grad()
def clip_score(
    images: torch.Tensor | np.ndarray, prompts: Sequence[str], model_and_processor, batch_size: int = 64
) -> float:
    """torchmetrics CLIPScore of images against their prompts: max(mean over images of 100 * cos, 0).

    torchmetrics clamps the mean at 0, not each image's score (CLIPScore.compute).
    model_and_processor: a callable returning (model, processor), or such a pair."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    images = as_uint8_nchw(images)
    prompts = list(prompts)
    if len(prompts) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
    if not all(isinstance(p, str) and p for p in prompts):
        raise ValueError("every prompt must be a non-empty string")
    metric = CLIPScore(model_name_or_path=_as_model_and_processor(model_and_processor))
    for i in range(0, len(prompts), batch_size):
        metric.update(images[i : i + batch_size], prompts[i : i + batch_size])
    return float(metric.compute())


# --------------------------------------------------------------------------------------------- FID


class ClipImageFeatures(nn.Module):
    """FID feature module on CLIP image embeddings (L2-normalised, as CLIP compares them).

    uint8 (N, 3, H, W) -> (N, num_features) float. torchmetrics' FrechetInceptionDistance reads
    `num_features` and hands images through unchanged."""

    model: Any  # a transformers CLIPModel or a TensorFeatures (see TensorFeatures.model)

    def __init__(self, model: nn.Module, processor, normalize: bool = True, probe_size: int = 32):
        super().__init__()
        self.model = model
        self.processor = processor
        self.normalize = normalize
        probe = torch.zeros(1, 3, probe_size, probe_size, dtype=torch.uint8)
        self.num_features = int(self.forward(probe).shape[-1])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise ValueError(f"ClipImageFeatures takes uint8 images, got {images.dtype}")
        pixel_values = self.processor(images=[i.cpu() for i in images], return_tensors="pt")["pixel_values"]
        device = next(self.model.parameters()).device
        feats = _features_tensor(self.model.get_image_features(pixel_values.to(device))).float()
        if self.normalize:
            feats = feats / feats.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        return feats


def inception_features(weights_path: str | Path) -> nn.Module:
    """The standard FID Inception-v3 (2048 features) from a local torch-fidelity weights file.

    Needs the torch-fidelity package and its weights file (pt_inception-2015-12-05-6726825d.pth) on disk;
    nothing is downloaded."""
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights file not found: {path}")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as exc:  # pragma: no cover - torchmetrics layout changed
        raise RuntimeError(f"torchmetrics has no NoTrainInceptionV3: {exc}") from exc
    try:
        module = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
        )
    except ModuleNotFoundError as exc:
        raise RuntimeError("Inception FID needs the torch-fidelity package: pip install torch-fidelity") from exc
    module.num_features = 2048
    return module


def fid(
    real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray, feature_module: nn.Module, batch_size: int = 64
) -> float:
    """torchmetrics FrechetInceptionDistance between two image sets, on `feature_module`'s features.

    With fewer samples per side than feature dimensions the covariances are singular and FID is biased
    upwards; `fid_is_reliable` says whether a pair of set sizes is enough."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = as_uint8_nchw(real), as_uint8_nchw(fake)
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per side, got {real.shape[0]} real and {fake.shape[0]} fake")
    if not isinstance(getattr(feature_module, "num_features", None), int):
        raise ValueError("the feature module needs an integer `num_features` attribute")
    metric = FrechetInceptionDistance(feature=feature_module, normalize=False)
    for i in range(0, real.shape[0], batch_size):
        metric.update(real[i : i + batch_size], real=True)
    for i in range(0, fake.shape[0], batch_size):
        metric.update(fake[i : i + batch_size], real=False)
    return max(float(metric.compute()), 0.0)


def fid_is_reliable(n_real: int, n_fake: int, num_features: int) -> bool:
    """Both sides have more samples than feature dimensions (full-rank covariance estimates)."""
    return min(n_real, n_fake) > num_features


# --------------------------------------------------------------------------------------------- vs humans


@dataclass
class Correlation:
    metric: str  # metric name, e.g. "clip_score"
    rho: float  # Spearman rank correlation of the raw metric with the human score (nan when undefined)
    agreement: float  # rho oriented so that +1 means the metric orders models as humans do
    p_value: float  # two-sided p-value of rho (scipy; exact for small n, nan when undefined)
    n: int  # models with both a metric value and a human score
    note: str  # why rho is undefined, or "" when it is defined

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            "rho": _nan_to_none(self.rho),
            "agreement": _nan_to_none(self.agreement),
            "p_value": _nan_to_none(self.p_value),
            "n": self.n,
            "note": self.note,
        }


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def spearman_with_human(
    metric_by_model: Mapping[str, float],
    human_by_model: Mapping[str, float],
    *,
    metric: str = "metric",
    higher_is_better: bool = True,
) -> Correlation:
    """Spearman rank correlation between a metric and human (Bradley-Terry) scores over the common models.

    For FID pass higher_is_better=False: `agreement` is then -rho, so +1 still means "same order as humans"."""
    from scipy.stats import spearmanr

    models = sorted(
        m for m in metric_by_model if m in human_by_model and _finite(metric_by_model[m]) and _finite(human_by_model[m])
    )
    n = len(models)
    if n < 3:
        return Correlation(
            metric, math.nan, math.nan, math.nan, n, f"needs at least 3 models with both values, has {n}"
        )
    x = np.array([metric_by_model[m] for m in models], dtype=float)
    y = np.array([human_by_model[m] for m in models], dtype=float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(metric, math.nan, math.nan, math.nan, n, "all models have the same value")
    result = spearmanr(x, y)
    rho, p = float(result.statistic), float(result.pvalue)
    return Correlation(metric, rho, rho if higher_is_better else -rho, p, n, "")


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating)) and math.isfinite(float(x))


def timed(fn: Callable, *args, **kwargs) -> tuple[Any, float]:
    """(fn(*args, **kwargs), seconds it took)."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
