"""Text-to-3D by score distillation (DreamFusion, Poole et al. 2022) with any prior that denoises.

    from generation.threed import InHousePrior, AssetSettings, generate_asset, render_turntable, save_asset
    prior = InHousePrior.from_checkpoint("demo_models/mmdit-demo")
    asset = generate_asset(prior, "a red circle on a blue background", seed=0, settings=AssetSettings())
    views = render_turntable(asset, n_views=8, size=32)      # list of PIL images, azimuth 0, 45, ..., 315
    save_asset(asset, "asset.safetensors"); asset = load_asset("asset.safetensors")

Modules: field.py (the 3D representation: a density + albedo voxel grid and a background colour), render.py
(cameras, rays, emission-absorption volume rendering with diffuse shading), priors.py (the `Prior` protocol
and its adapters for the in-house MM-DiT and for diffusers pipelines), sds.py (the score-distillation
gradient for velocity and eps predictors, with classifier-free guidance), optimise.py (the loop, the asset
and its file). Plain PyTorch: nothing here knows Django.
"""

from generation.threed.field import FieldConfig, VoxelField
from generation.threed.optimise import (
    Asset,
    AssetFileError,
    AssetSettings,
    generate_asset,
    load_asset,
    render_turntable,
    save_asset,
)
from generation.threed.priors import DiffusersPrior, InHousePrior, Prior, UNetBaselinePrior, load_prior
from generation.threed.render import Camera, RenderSettings, orbit_camera, render_views, sample_cameras
from generation.threed.sds import sds_gradient, sds_loss

__all__ = [
    "Asset",
    "AssetFileError",
    "AssetSettings",
    "Camera",
    "DiffusersPrior",
    "FieldConfig",
    "InHousePrior",
    "Prior",
    "RenderSettings",
    "UNetBaselinePrior",
    "VoxelField",
    "generate_asset",
    "load_asset",
    "load_prior",
    "orbit_camera",
    "render_turntable",
    "render_views",
    "sample_cameras",
    "save_asset",
    "sds_gradient",
    "sds_loss",
]
