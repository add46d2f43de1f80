"""Checkpoint directories shared by the in-house MM-DiT and the UNet baseline: model.safetensors + config.json.

Files are written to temporary names and renamed, config.json last, so a directory holding a config.json
always holds a complete checkpoint. Reading checks the format tag and version and says what is wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from generation.contract import CONFIG_FILE, WEIGHTS_FILE


def write_checkpoint(directory: str | os.PathLike, state_dict: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write the weights, then the JSON meta ({format, format_version, config, recipe}); returns the directory."""
    from safetensors.torch import save_file

    try:
        meta_text = json.dumps(meta, indent=2, sort_keys=True)
    except TypeError as e:
        raise ValueError(f"recipe is not JSON-serialisable: {e}") from e
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    tmp_weights, tmp_config = directory / (WEIGHTS_FILE + ".tmp"), directory / (CONFIG_FILE + ".tmp")
    save_file(state, str(tmp_weights), metadata={"format": "pt"})
    tmp_config.write_text(meta_text + "\n")
    os.replace(tmp_weights, directory / WEIGHTS_FILE)
    os.replace(tmp_config, directory / CONFIG_FILE)
    return directory


def read_checkpoint_meta(directory: str | os.PathLike, *, fmt: str, version: int, what: str) -> dict:
    """config.json of a checkpoint directory of format `fmt`, checked; `what` names the kind in errors."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: not {what} checkpoint directory")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise ValueError(f"{path} is not {what} checkpoint config (format must be {fmt!r})")
    if meta.get("format_version") != version:
        raise ValueError(f"{path}: unsupported format_version {meta.get('format_version')!r}")
    meta.setdefault("recipe", {})
    return meta
