"""Cameras, rays and differentiable volume rendering of a `VoxelField`.

World axes: y is up; a camera at azimuth a and elevation e sits at distance d on the sphere,
    position = d (cos e sin a, sin e, cos e cos a),
and looks at the origin with the world's y axis up in its image (row 0 is the top). Azimuth 0 looks down -z.

Rays are bounded by the sphere of radius `bound` (the grid's inscribed sphere by default): each ray takes
`samples_per_ray` evenly spaced points between its entry and exit (midpoints of equal segments of length
delta), and rays that miss the sphere see only the background. Emission-absorption compositing:
    alpha_i = 1 - exp(-sigma_i delta),  T_i = prod_{j<i} (1 - alpha_j),  w_i = T_i alpha_i,
    colour = sum_i w_i c_i + (1 - sum_i w_i) background,  opacity = sum_i w_i = 1 - exp(-sum_i sigma_i delta).
Shading (per view): "albedo" (c = albedo), "lambertian" (c = albedo (ambient + (1 - ambient) max(0, n.l))) or
"textureless" (the same with white albedo), with the normal n = -grad(density) / |grad(density)| and the
light direction l drawn around the camera, as in DreamFusion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from generation.threed.field import VoxelField

SHADINGS = ("albedo", "lambertian", "textureless")


@dataclass(frozen=True)
class RenderSettings:
    image_size: int = 32  # pixels per side of a view
    samples_per_ray: int = 64  # points per ray between the bounding sphere's entry and exit
    camera_distance: float = 3.0  # world units from the origin
    fov_degrees: float = 40.0  # vertical (= horizontal) field of view
    bound: float = 1.0  # radius of the sphere that bounds the rays
    ambient: float = 0.3  # ambient share of the Lambertian shading

    def __post_init__(self):
        if self.image_size < 1 or self.samples_per_ray < 1:
            raise ValueError("image_size and samples_per_ray must be >= 1")
        if self.bound >= self.camera_distance:
            raise ValueError("the camera must be outside the bounding sphere")


@dataclass(frozen=True)
class Camera:
    azimuth: float  # degrees
    elevation: float  # degrees
    shading: str = "albedo"  # one of SHADINGS
    light: tuple[float, float, float] | None = None  # unit light direction (towards the light); None: the camera's

    def __post_init__(self):
        if self.shading not in SHADINGS:
            raise ValueError(f"unknown shading {self.shading!r}; use one of {', '.join(SHADINGS)}")


def orbit_camera(azimuth: float, elevation: float, distance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(position (3,), rotation (3, 3) whose columns are the camera's right, up and backward axes in world)."""
    a, e = math.radians(azimuth), math.radians(elevation)
    position = distance * torch.tensor([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
    backward = position / position.norm()  # the camera looks along -backward, at the origin
    right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), backward)
    right = right / right.norm()
    up = torch.linalg.cross(backward, right)
    return position, torch.stack([right, up, backward], dim=1)


def camera_rays(camera: Camera, settings: RenderSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions, each (H, W, 3), through the pixel centres of one view."""
    S = settings.image_size
    position, rotation = orbit_camera(camera.azimuth, camera.elevation, settings.camera_distance)
    half = math.tan(math.radians(settings.fov_degrees) / 2)
    coords = (torch.arange(S, dtype=torch.float32) + 0.5) / S * 2 - 1  # -1 .. 1 across the image
    v, u = torch.meshgrid(-coords * half, coords * half, indexing="ij")  # row 0 at the top
    directions = torch.stack([u, v, -torch.ones_like(u)], dim=-1) @ rotation.T  # (H, W, 3) in world axes
    directions = directions / directions.norm(dim=-1, keepdim=True)
    return position.expand(S, S, 3), directions


def sphere_interval(origins: torch.Tensor, directions: torch.Tensor, radius: float):
    """Entry and exit distances of rays (..., 3) through the sphere of `radius` at the origin, and which hit it."""
    b = (origins * directions).sum(-1)
    c = (origins * origins).sum(-1) - radius**2
    disc = b * b - c
    hit = disc > 0
    root = disc.clamp_min(0).sqrt()
    near, far = (-b - root).clamp_min(0), (-b + root).clamp_min(0)
    return near, far, hit


def light_around(camera: Camera, generator: torch.Generator | None, spread: float = 0.5) -> torch.Tensor:
    """A unit light direction: the camera's own direction plus Gaussian jitter of `spread` (drawn if no light)."""
    if camera.light is not None:
        return F.normalize(torch.tensor(camera.light, dtype=torch.float32), dim=0)
    position, _ = orbit_camera(camera.azimuth, camera.elevation, 1.0)
    jitter = torch.randn(3, generator=generator) * spread if generator is not None else torch.zeros(3)
    return F.normalize(position + jitter, dim=0)


def render_view(
    field: VoxelField, camera: Camera, settings: RenderSettings, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """One view: {"rgb": (3, H, W) in [0, 1], "opacity": (H, W), "depth": (H, W)}, differentiable in the field."""
    device = field.density_logit.device
    origins, directions = (r.to(device) for r in camera_rays(camera, settings))  # (H, W, 3)
    near, far, hit = sphere_interval(origins, directions, settings.bound)  # (H, W)
    n = settings.samples_per_ray
    fractions = (torch.arange(n, dtype=torch.float32, device=device) + 0.5) / n  # (n,) midpoints
    depths = near[..., None] + (far - near)[..., None] * fractions  # (H, W, n)
    delta = ((far - near) / n) * hit  # (H, W): a missed ray has no length inside
    points = origins[..., None, :] + directions[..., None, :] * depths[..., None]  # (H, W, n, 3)
    shaded = camera.shading != "albedo"
    values = field.query(points, normals=shaded)
    sigma = values["density"]  # (H, W, n)
    if camera.shading == "albedo":
        colour = values["albedo"]  # (H, W, n, 3)
    else:
        light = light_around(camera, generator).to(device)
        lambert = (values["normal"] @ light).clamp_min(0)  # (H, W, n)
        shade = settings.ambient + (1 - settings.ambient) * lambert
        base = values["albedo"] if camera.shading == "lambertian" else torch.ones_like(values["albedo"])
        colour = base * shade[..., None]
    tau = sigma * delta[..., None]  # optical depth of each segment
    alpha = 1 - torch.exp(-tau)
    transmittance = torch.exp(-(torch.cumsum(tau, dim=-1) - tau))  # T_i = exp(-sum_{j<i} tau_j)
    weights = transmittance * alpha  # (H, W, n)
    opacity = weights.sum(-1)  # (H, W)
    rgb = (weights[..., None] * colour).sum(-2) + (1 - opacity)[..., None] * field.background
    depth = (weights * depths).sum(-1) / opacity.clamp_min(1e-6)
    return {"rgb": rgb.permute(2, 0, 1), "opacity": opacity, "depth": depth}


def render_views(
    field: VoxelField,
    cameras: Sequence[Camera],
    settings: RenderSettings,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """A batch of views: {"rgb": (B, 3, H, W), "opacity": (B, H, W), "depth": (B, H, W)}."""
    views = [render_view(field, c, settings, generator) for c in cameras]
    return {key: torch.stack([v[key] for v in views]) for key in views[0]}


def sample_cameras(
    n: int,
    generator: torch.Generator,
    elevation_range: tuple[float, float] = (-10.0, 30.0),
    p_textureless: float = 0.1,
    p_lambertian: float = 0.0,
) -> list[Camera]:
    """n training cameras: azimuth uniform in [0, 360), elevation uniform in `elevation_range`, shading drawn
    per view (textureless with p_textureless, Lambertian with p_lambertian, else plain albedo)."""
    u = torch.rand((n, 3), generator=generator, dtype=torch.float64).tolist()
    lo, hi = elevation_range
    cameras = []
    for azimuth_u, elevation_u, shading_u in u:
        if shading_u < p_textureless:
            shading = "textureless"
        elif shading_u < p_textureless + p_lambertian:
            shading = "lambertian"
        else:
            shading = "albedo"
        cameras.append(Camera(azimuth=360.0 * azimuth_u, elevation=lo + (hi - lo) * elevation_u, shading=shading))
    return cameras


@torch.no_grad()
def opposite_view_iou(
    field: VoxelField,
    settings: RenderSettings,
    azimuth: float,
    elevation: float,
    mirror: bool = True,
    threshold: float = 0.5,
) -> float:
    """Silhouette agreement of a view and the exactly opposite one (azimuth + 180, -elevation): intersection
    over union of their opacity > threshold masks, the opposite one flipped left-right (`mirror`), as a view
    from behind shows the same outline mirrored (exactly so for a distant camera)."""
    cameras = [Camera(azimuth, elevation), Camera(azimuth + 180.0, -elevation)]
    masks = render_views(field, cameras, settings)["opacity"] > threshold  # (2, H, W)
    front, back = masks[0], masks[1].flip(-1) if mirror else masks[1]
    union = (front | back).sum()
    return float((front & back).sum() / union) if union else 1.0
