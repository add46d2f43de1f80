"""Volume rendering against closed forms: an analytic sphere's opacity, compositing, and opposite views."""

from __future__ import annotations

import math

import pytest
import torch

from generation.threed import Camera, FieldConfig, RenderSettings, VoxelField, render_views
from generation.threed.field import grid_coordinates
from generation.threed.render import camera_rays, opposite_view_iou, sample_cameras

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sphere_field(radius: float, sigma: float, resolution: int = 48, albedo: float | None = None) -> VoxelField:
    vox = VoxelField(FieldConfig(resolution=resolution), generator=torch.Generator().manual_seed(0))
    coords = grid_coordinates(resolution, 1.0)
    vox.set_density(sigma * (coords.norm(dim=-1) <= radius).float())
    if albedo is not None:
        with torch.no_grad():
            vox.albedo_logit.fill_(math.log(albedo / (1 - albedo)))
    return vox


def chord_lengths(camera: Camera, settings: RenderSettings, radius: float) -> torch.Tensor:
    """(H, W) length of each pixel's ray inside the sphere of `radius` at the origin."""
    origins, directions = camera_rays(camera, settings)
    along = -(origins * directions).sum(-1)  # distance to the point closest to the centre
    miss2 = (origins**2).sum(-1) - along**2  # squared distance of the ray from the centre
    return 2 * (radius**2 - miss2).clamp_min(0).sqrt()


@pytest.mark.parametrize("azimuth, elevation", [(0.0, 0.0), (130.0, 25.0)])
def test_an_analytic_sphere_renders_its_closed_form_opacity(azimuth, elevation):
    radius, sigma = 0.5, 4.0
    settings = RenderSettings(image_size=32, samples_per_ray=128)
    camera = Camera(azimuth=azimuth, elevation=elevation)
    opacity = render_views(sphere_field(radius, sigma), [camera], settings)["opacity"][0]
    expected = 1 - torch.exp(-sigma * chord_lengths(camera, settings, radius))
    error = (opacity - expected).abs()
    assert expected.max() > 0.95 and (expected == 0).float().mean() > 0.3  # the sphere and the empty space both show
    assert error.mean() < 0.01, error.mean()
    centre = error[12:20, 12:20]  # inside the sphere's image, away from the voxelised edge
    assert centre.max() < 0.01, centre.max()


def test_colour_is_albedo_over_the_background_by_opacity():
    vox = sphere_field(0.5, 4.0, albedo=0.8)
    with torch.no_grad():
        vox.background_logit.copy_(torch.tensor([-2.0, 0.0, 2.0]))
    out = render_views(vox, [Camera(0.0, 10.0)], RenderSettings(image_size=16, samples_per_ray=64))
    opacity, rgb = out["opacity"][0], out["rgb"][0]
    expected = 0.8 * opacity + vox.background[:, None, None].detach() * (1 - opacity)
    torch.testing.assert_close(rgb, expected, atol=2e-3, rtol=0)


def test_a_textureless_view_is_lit_from_the_light_side():
    vox = sphere_field(0.6, 20.0)
    light = (1.0, 0.0, 0.0)  # from +x: the right half of a view from azimuth 0 (looking down -z)
    rgb = render_views(vox, [Camera(0.0, 0.0, shading="textureless", light=light)], RenderSettings(16, 48))["rgb"][0]
    assert rgb[:, 6:10, 10:12].mean() > rgb[:, 6:10, 4:6].mean() + 0.2


def asymmetric_front_back_symmetric_field() -> VoxelField:
    """An L-shaped block, off-centre in x and y, symmetric under z -> -z."""
    vox = VoxelField(FieldConfig(resolution=32), generator=torch.Generator().manual_seed(0))
    x, y, z = grid_coordinates(32, 1.0).unbind(-1)
    bar = (x > -0.6) & (x < 0.5) & (y > -0.5) & (y < -0.2) & (z.abs() < 0.3)
    post = (x > 0.2) & (x < 0.5) & (y > -0.5) & (y < 0.6) & (z.abs() < 0.3)
    vox.set_density(30.0 * (bar | post).float())
    return vox


@pytest.mark.parametrize("azimuth", [0.0, 30.0])
def test_opposite_views_of_one_field_have_mirrored_silhouettes(azimuth):
    """At elevation 0 the view from behind shows the mirrored outline (up to perspective: the camera is close)."""
    vox = asymmetric_front_back_symmetric_field()
    settings = RenderSettings(image_size=32, samples_per_ray=64)
    mirrored = opposite_view_iou(vox, settings, azimuth=azimuth, elevation=0.0, mirror=True)
    unmirrored = opposite_view_iou(vox, settings, azimuth=azimuth, elevation=0.0, mirror=False)
    assert mirrored > 0.9, mirrored
    assert unmirrored < 0.6, unmirrored  # the shape is not left-right symmetric: the mirror is what matches


def test_training_cameras_cover_the_elevation_range_and_shadings_from_the_seed():
    cameras = sample_cameras(2000, torch.Generator().manual_seed(0), (-10.0, 30.0), p_textureless=0.1)
    elevations = torch.tensor([c.elevation for c in cameras])
    azimuths = torch.tensor([c.azimuth for c in cameras])
    assert -10 <= elevations.min() < -9 and 29 < elevations.max() <= 30
    assert 0 <= azimuths.min() < 1 and 359 < azimuths.max() < 360
    textureless = sum(c.shading == "textureless" for c in cameras) / len(cameras)
    assert 0.08 < textureless < 0.12
    assert sample_cameras(4, torch.Generator().manual_seed(1)) == sample_cameras(4, torch.Generator().manual_seed(1))
