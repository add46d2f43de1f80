"""The 3D representation: a voxel grid of density and albedo over the cube [-extent, extent]^3, sampled
trilinearly, and one learned background colour (the colour of every ray that leaves the scene).

Parametrisation (what Adam optimises):
    density = softplus(density_logit)          >= 0, per unit length
    albedo  = sigmoid(albedo_logit)             RGB in [0, 1]
    background = sigmoid(background_logit)      RGB in [0, 1]
The density starts as a central Gaussian blob (DreamFusion's "density blob" initialisation, so that early views
are not empty) over a near-empty grid; albedo and background logits start as seeded standard normal noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PARAMETER_NAMES = ("density_logit", "albedo_logit", "background_logit")  # what an asset file stores


@dataclass(frozen=True)
class FieldConfig:
    resolution: int = 48  # voxels per side of the grid
    extent: float = 1.0  # the grid spans [-extent, extent] on each axis (world units)
    blob_density: float = 10.0  # peak density of the initial central Gaussian blob
    blob_sigma: float = 0.35  # the blob's standard deviation, as a fraction of `extent`
    floor_density: float = 0.01  # density of the rest of the grid at initialisation

    def __post_init__(self):
        if self.resolution < 2:
            raise ValueError(f"a voxel grid needs at least 2 voxels per side, got {self.resolution}")
        if self.extent <= 0 or self.blob_sigma <= 0 or self.floor_density <= 0:
            raise ValueError("extent, blob_sigma and floor_density must be > 0")


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y, for y > 0."""
    return y + torch.log(-torch.expm1(-y))


def grid_coordinates(resolution: int, extent: float) -> torch.Tensor:
    """(R, R, R, 3) world coordinates (x, y, z) of the voxel centres; index [k, j, i] is (x_i, y_j, z_k),
    the layout F.grid_sample expects of a (C, D, H, W) volume with align_corners=True."""
    axis = torch.linspace(-extent, extent, resolution)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


class VoxelField(nn.Module):
    """Density and albedo on a voxel grid plus a background colour. `query(points)` samples it."""

    def __init__(self, config: FieldConfig = FieldConfig(), generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        R = config.resolution
        coords = grid_coordinates(R, config.extent)  # (R, R, R, 3)
        r2 = (coords**2).sum(-1) / (config.blob_sigma * config.extent) ** 2
        density = config.blob_density * torch.exp(-0.5 * r2) + config.floor_density
        self.density_logit = nn.Parameter(inverse_softplus(density)[None])  # (1, R, R, R)
        self.albedo_logit = nn.Parameter(torch.randn((3, R, R, R), generator=generator))  # (3, R, R, R)
        self.background_logit = nn.Parameter(torch.randn((3,), generator=generator))  # (3,)

    @property
    def background(self) -> torch.Tensor:
        return torch.sigmoid(self.background_logit)  # (3,)

    def density_grid(self) -> torch.Tensor:
        return F.softplus(self.density_logit)  # (1, R, R, R)

    def normal_grid(self, density: torch.Tensor) -> torch.Tensor:
        """(3, R, R, R) unit normals -grad(density) / |grad(density)| by central differences (one-sided at the
        faces), in world axes (x, y, z)."""
        spacing = 2 * self.config.extent / (self.config.resolution - 1)
        d = density[0]  # (R, R, R) indexed [z, y, x]
        grads = torch.gradient(d, spacing=spacing, dim=(2, 1, 0))  # d/dx, d/dy, d/dz
        normal = -torch.stack(grads)  # (3, R, R, R)
        return normal / (normal.norm(dim=0, keepdim=True) + 1e-6)

    def query(self, points: torch.Tensor, normals: bool = False) -> dict[str, torch.Tensor]:
        """Trilinear samples at world points (..., 3): {"density": (...,), "albedo": (..., 3)} and, with
        `normals`, "normal": (..., 3). Points outside the grid get density 0."""
        density = self.density_grid()
        channels = [density, torch.sigmoid(self.albedo_logit)]
        if normals:
            channels.append(self.normal_grid(density))
        volume = torch.cat(channels)[None]  # (1, C, R, R, R)
        shape = points.shape[:-1]
        grid = (points / self.config.extent).reshape(1, -1, 1, 1, 3)  # (1, N, 1, 1, 3) in [-1, 1]
        values = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        values = values.reshape(volume.shape[1], -1).T.reshape(*shape, volume.shape[1])  # (..., C)
        out = {"density": values[..., 0], "albedo": values[..., 1:4]}
        if normals:
            out["normal"] = F.normalize(values[..., 4:7], dim=-1, eps=1e-6)
        return out

    @torch.no_grad()
    def set_density(self, density: torch.Tensor) -> VoxelField:
        """Replace the density grid by `density` (R, R, R), indexed [z, y, x] (for tests and analytic scenes)."""
        self.density_logit.copy_(inverse_softplus(density.clamp_min(1e-6))[None])
        return self

    @property
    def num_voxels(self) -> int:
        return int(math.prod(self.density_logit.shape))
