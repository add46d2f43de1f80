"""In-house MM-DiT checkpoints: a directory with model.safetensors + config.json = {format, format_version,
config, recipe} (the format tag is generation.contract.MMDIT_FORMAT; files written by generation.checkpoint_io).

    save_checkpoint(model, recipe, "runs/demo")
    model, meta = load_mmdit("runs/demo", device="cpu")   # meta["recipe"]: how it was trained
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from generation.checkpoint_io import read_checkpoint_meta as _read_meta
from generation.checkpoint_io import write_checkpoint
from generation.contract import CONFIG_FILE, MMDIT_FORMAT, WEIGHTS_FILE
from generation.mmdit.model import MMDiT, MMDiTConfig

CHECKPOINT_FORMAT_VERSION = 1


def save_checkpoint(model: MMDiT, recipe: dict | None, directory: str | os.PathLike) -> Path:
    """Write <directory>/model.safetensors and <directory>/config.json = {format, config, recipe}.

    `recipe` is any JSON-serialisable dict the caller wants kept with the weights (objective, text encoder,
    steps, sampler defaults...). Files are written to temporary names and renamed, config.json last, so a
    directory with a config.json always holds a complete checkpoint.
    """
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd model saves its original's weights
    recipe = {} if recipe is None else recipe
    if not isinstance(recipe, dict):
        raise TypeError(f"recipe must be a dict, got {type(recipe).__name__}")
    meta = {
        "format": MMDIT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "config": model.config.to_dict(),
        "recipe": recipe,
    }
    return write_checkpoint(directory, model.state_dict(), meta)


def read_checkpoint_meta(directory: str | os.PathLike) -> dict:
    """config.json of a checkpoint directory, checked: {format, format_version, config, recipe}."""
    meta = _read_meta(directory, fmt=MMDIT_FORMAT, version=CHECKPOINT_FORMAT_VERSION, what="an MMDiT")
    if "config" not in meta:
        raise ValueError(f"{Path(directory) / CONFIG_FILE} has no 'config'")
    return meta


def load_mmdit(
    directory: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[MMDiT, dict]:
    """Load a checkpoint written by save_checkpoint -> (model in eval mode, meta = {config, recipe, ...}).

    Raises FileNotFoundError for a missing directory or file, ValueError for a corrupt file, an unknown config
    or weights that do not match the config (names or shapes)."""
    from safetensors.torch import load_file

    meta = read_checkpoint_meta(directory)
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        config = MMDiTConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{Path(directory) / CONFIG_FILE}: bad MMDiT config: {e}") from e
    try:
        state = load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from e

    with torch.device("meta"):
        model = MMDiT(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs config {expected[k]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shapes {wrong[:5]}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    model.to(device=device, dtype=dtype)
    return model.eval(), meta
