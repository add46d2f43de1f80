"""Text to a 3D asset: the score-distillation loop, the asset, its turntable and its file.

    asset = generate_asset(prior, "a red circle on a blue background", seed=0, settings=AssetSettings())
    images = render_turntable(asset, n_views=8, size=32)
    save_asset(asset, path); asset = load_asset(path)   # AssetFileError, with the path and the reason, if corrupt

Each step renders `views_per_step` views from random cameras (azimuth uniform, elevation in `elevation_range`,
about 10% textureless), takes the SDS gradient of the prior on them and moves the field with Adam. One CPU
torch.Generator seeded with `seed` draws everything (the initial field, cameras, lights, noise levels, noise),
so the same prior, prompt, seed and settings give the same asset on the same machine and thread count.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from generation.contract import THREED_ASSET_FORMAT
from generation.threed.field import PARAMETER_NAMES, FieldConfig, VoxelField
from generation.threed.priors import Prior
from generation.threed.render import Camera, RenderSettings, render_views, sample_cameras
from generation.threed.sds import SDSSettings, sds_loss

ASSET_FORMAT_VERSION = 1


class AssetFileError(ValueError):
    """An asset file is missing, corrupt, or not an asset of a version this code reads."""


@dataclass(frozen=True)
class AssetSettings:
    steps: int = 800  # optimisation steps
    lr: float = 0.05  # Adam's learning rate on the field's logits
    views_per_step: int = 4  # random views rendered and scored per step
    elevation_range: tuple[float, float] = (-10.0, 30.0)  # training cameras' elevations, degrees
    p_textureless: float = 0.1  # share of views rendered with white albedo and Lambertian shading
    p_lambertian: float = 0.0  # share of views rendered with albedo and Lambertian shading
    sds: SDSSettings = dataclasses.field(default_factory=SDSSettings)  # guidance 30, t ~ U(0.02, 0.98), w(t) = t
    render: RenderSettings = dataclasses.field(default_factory=RenderSettings)  # 32x32 views, 64 samples per ray
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)  # 48^3 grid with a central density blob

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AssetSettings:
        """The settings from `to_dict`'s form (JSON), missing keys at their defaults; unknown keys are refused
        with a ValueError naming them (a setting that is silently ignored would make a different asset)."""
        data = dict(data)
        nested: dict[str, type] = {"sds": SDSSettings, "render": RenderSettings, "field": FieldConfig}
        _refuse_unknown("asset", data, {f.name for f in dataclasses.fields(cls)})
        for key, kind in nested.items():
            if key in data:
                _refuse_unknown(key, data[key], {f.name for f in dataclasses.fields(kind)})
                data[key] = kind(**data[key])
        if "elevation_range" in data:
            data["elevation_range"] = tuple(data["elevation_range"])
        return cls(**data)


def _refuse_unknown(what: str, data: dict, known: set[str]) -> None:
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")


@dataclass
class Asset:
    """A 3D asset: its field and what made it."""

    field: VoxelField
    settings: AssetSettings
    prompt: str
    seed: int
    steps_done: int = 0
    cpu_seconds: float = 0.0  # process CPU time of the optimisation (all threads)
    wall_seconds: float = 0.0


def generate_asset(
    prior: Prior,
    prompt: str,
    seed: int,
    settings: AssetSettings = AssetSettings(),
    callback: Callable[[int, Asset], None] | None = None,
) -> Asset:
    """Optimise a field for `prompt` by score distillation from `prior`. Views are rendered at the prior's image
    size (recorded in the asset's settings). `callback(step, asset)` runs after every step."""
    if settings.render.image_size != prior.image_size:
        settings = dataclasses.replace(
            settings, render=dataclasses.replace(settings.render, image_size=prior.image_size)
        )
    generator = torch.Generator().manual_seed(int(seed))
    vox = VoxelField(settings.field, generator=generator).to(prior.device)
    asset = Asset(field=vox, settings=settings, prompt=prompt, seed=int(seed))
    if settings.steps == 0:
        return asset
    text = prior.encode_prompt(prompt)
    optimiser = torch.optim.Adam(vox.parameters(), lr=settings.lr)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for step in range(settings.steps):
        cameras = sample_cameras(
            settings.views_per_step, generator, settings.elevation_range, settings.p_textureless, settings.p_lambertian
        )
        views = render_views(vox, cameras, settings.render, generator)
        loss = sds_loss(prior, views["rgb"], text, settings.sds, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        asset.steps_done = step + 1
        if callback is not None:
            callback(step, asset)
    asset.cpu_seconds = time.process_time() - cpu0
    asset.wall_seconds = time.perf_counter() - wall0
    return asset


def to_pil(rgb: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [0, 1] -> RGB PIL images."""
    pixels = (rgb.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(p)) for p in pixels]


@torch.no_grad()
def render_turntable(
    asset: Asset, n_views: int = 8, size: int | None = None, elevation: float = 10.0, shading: str = "albedo"
) -> list[Image.Image]:
    """n_views images at azimuths 0, 360/n, ... at one elevation, size x size pixels (default: the training size)."""
    render = asset.settings.render
    if size is not None and size != render.image_size:
        render = dataclasses.replace(render, image_size=int(size))
    cameras = [Camera(azimuth=360.0 * i / n_views, elevation=elevation, shading=shading) for i in range(n_views)]
    return to_pil(render_views(asset.field, cameras, render)["rgb"])


def save_asset(asset: Asset, path: str | os.PathLike) -> Path:
    """One safetensors file: the field's logits, and the settings, prompt and seed in its metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {name: getattr(asset.field, name).detach().cpu().contiguous() for name in PARAMETER_NAMES}
    metadata = {
        "format": THREED_ASSET_FORMAT,
        "format_version": str(ASSET_FORMAT_VERSION),
        "settings": json.dumps(asset.settings.to_dict()),
        "prompt": asset.prompt,
        "seed": str(asset.seed),
        "steps_done": str(asset.steps_done),
        "cpu_seconds": repr(asset.cpu_seconds),
        "wall_seconds": repr(asset.wall_seconds),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)  # a crash never leaves half a file under the asset's name
    return path


def load_asset(path: str | os.PathLike, device: str | torch.device = "cpu") -> Asset:
    """Read a file written by `save_asset`. Raises AssetFileError saying which file and what is wrong."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise AssetFileError(f"no asset file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as e:  # safetensors raises its own error types for truncated or garbled files
        raise AssetFileError(f"{path} is not a readable asset file (corrupt or truncated): {e}") from e
    if metadata.get("format") != THREED_ASSET_FORMAT:
        raise AssetFileError(f"{path} is not a 3D asset (format {metadata.get('format')!r})")
    if metadata.get("format_version") != str(ASSET_FORMAT_VERSION):
        raise AssetFileError(f"{path} has asset format version {metadata.get('format_version')!r}, not 1")
    try:
        settings = AssetSettings.from_dict(json.loads(metadata["settings"]))
        vox = VoxelField(settings.field)
        for name in PARAMETER_NAMES:
            expected = getattr(vox, name).shape
            if name not in tensors or tensors[name].shape != expected:
                got = tuple(tensors[name].shape) if name in tensors else "missing"
                raise ValueError(f"tensor {name} is {got}, expected {tuple(expected)}")
            with torch.no_grad():
                getattr(vox, name).copy_(tensors[name])
        asset = Asset(
            field=vox.to(device),
            settings=settings,
            prompt=metadata["prompt"],
            seed=int(metadata["seed"]),
            steps_done=int(metadata.get("steps_done", 0)),
            cpu_seconds=float(metadata.get("cpu_seconds", 0.0)),
            wall_seconds=float(metadata.get("wall_seconds", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise AssetFileError(f"{path} is an inconsistent asset file: {e}") from e
    return asset
