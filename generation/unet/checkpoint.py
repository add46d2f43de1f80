"""UNet baseline checkpoints: a directory with model.safetensors + config.json = {format, format_version, config,
recipe} (the format tag is generation.contract.UNET_BASELINE_FORMAT; files written by generation.checkpoint_io).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from generation.checkpoint_io import read_checkpoint_meta as _read_meta
from generation.checkpoint_io import write_checkpoint
from generation.contract import UNET_BASELINE_FORMAT, WEIGHTS_FILE
from generation.unet.model import UNetBaseline, UNetBaselineConfig

CHECKPOINT_FORMAT_VERSION = 1


def save_checkpoint(model: UNetBaseline, recipe: dict | None, directory: str | os.PathLike) -> Path:
    """Write model.safetensors and config.json (config.json last, so its presence means complete)."""
    meta = {
        "format": UNET_BASELINE_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": model.config.to_dict(),
        "recipe": recipe or {},
    }
    return write_checkpoint(directory, model.state_dict(), meta)


def read_checkpoint_meta(directory: str | os.PathLike) -> dict:
    return _read_meta(directory, fmt=UNET_BASELINE_FORMAT, version=CHECKPOINT_FORMAT_VERSION, what="a UNet baseline")


def load_unet_baseline(
    directory: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[UNetBaseline, dict]:
    """-> (model in eval mode, meta). FileNotFoundError for missing files, ValueError for corrupt ones."""
    from safetensors.torch import load_file

    meta = read_checkpoint_meta(directory)
    config = UNetBaselineConfig.from_dict(meta["config"])
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        state = load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from e
    model = UNetBaseline(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shapes {wrong[:3]}"
        )
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval(), meta
