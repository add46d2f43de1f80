"""Dual encoder checkpoints: a folder with model.safetensors (the trained weights, without the frozen MiniLM
backbone) and config.json = {"kind": "dual_encoder", **DualEncoderConfig}, plus training.json (the training
report) when it was trained here.

    model, processor = load_dual_encoder("demo_models/clip-demo")
    CLIPScore(model_name_or_path=clip_model_and_processor("demo_models/clip-demo"))   # torchmetrics
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from generation.contract import CONFIG_FILE, WEIGHTS_FILE
from generation.dual_encoder.model import DualEncoder, DualEncoderConfig
from generation.dual_encoder.processor import DualEncoderProcessor

REPORT_FILE = "training.json"


def save_dual_encoder(model: DualEncoder, out_dir: str | Path, report: dict | None = None) -> Path:
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(model.trained_state_dict(), str(out / WEIGHTS_FILE))
    (out / CONFIG_FILE).write_text(json.dumps({"kind": "dual_encoder", **asdict(model.config)}, indent=2) + "\n")
    if report is not None:
        (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return out


def is_dual_encoder_dir(path: str | Path) -> bool:
    cfg = Path(path) / CONFIG_FILE
    try:
        return cfg.is_file() and json.loads(cfg.read_text()).get("kind") == "dual_encoder"
    except (OSError, json.JSONDecodeError):
        return False


def load_dual_encoder(path: str | Path, device: str = "cpu") -> tuple[DualEncoder, DualEncoderProcessor]:
    """Model (with its frozen text backbone attached, in eval mode) and processor from a checkpoint folder."""
    from safetensors.torch import load_file

    from generation.text import load_text_encoder

    path = Path(path)
    if not is_dual_encoder_dir(path):
        raise FileNotFoundError(f"no dual encoder checkpoint at {path} ({CONFIG_FILE} with kind 'dual_encoder')")
    values = json.loads((path / CONFIG_FILE).read_text())
    values.pop("kind")
    cfg = DualEncoderConfig.from_dict(values)
    model = DualEncoder(cfg)
    missing, unexpected = model.load_state_dict(load_file(str(path / WEIGHTS_FILE)), strict=False)
    if unexpected or [k for k in missing if not k.startswith("backbone.")]:
        raise ValueError(f"checkpoint {path} does not match its config: missing={missing} unexpected={unexpected}")
    encoder = load_text_encoder(cfg.text_model)
    model.attach_backbone(encoder.model)
    model.eval().to(device)
    return model, DualEncoderProcessor(encoder.tokenizer, cfg.image_size, cfg.max_tokens)


def clip_model_and_processor(
    path: str | Path, device: str = "cpu"
) -> Callable[[], tuple[DualEncoder, DualEncoderProcessor]]:
    """The callable torchmetrics' CLIPScore accepts as `model_name_or_path`; loads on first call."""
    path = Path(path)
    if not is_dual_encoder_dir(path):
        raise FileNotFoundError(f"no dual encoder checkpoint at {path}")
    return lambda: load_dual_encoder(path, device)
