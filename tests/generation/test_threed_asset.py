"""Assets: a seed makes an asset reproducible, the turntable, and the asset file with its clear errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from generation.threed import (
    AssetFileError,
    AssetSettings,
    generate_asset,
    load_asset,
    render_turntable,
    save_asset,
)
from generation.threed.field import PARAMETER_NAMES
from tests.generation.threed_support import FixedTargetPrior, small_settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RED_ON_BLUE = torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1).repeat(1, 8, 8)
RED_ON_BLUE[:, 2:6, 2:6] = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1)


def prior() -> FixedTargetPrior:
    return FixedTargetPrior(RED_ON_BLUE.clone(), "velocity")


def tensors(asset):
    return {name: getattr(asset.field, name).detach().clone() for name in PARAMETER_NAMES}


def test_the_same_seed_gives_the_same_asset_and_another_seed_another():
    first = generate_asset(prior(), "a red square on a blue background", seed=3, settings=small_settings(steps=4))
    again = generate_asset(prior(), "a red square on a blue background", seed=3, settings=small_settings(steps=4))
    other = generate_asset(prior(), "a red square on a blue background", seed=4, settings=small_settings(steps=4))
    assert first.steps_done == 4
    for name, value in tensors(first).items():
        assert torch.equal(value, tensors(again)[name]), name
        assert not torch.equal(value, tensors(other)[name]), name
    initial = generate_asset(prior(), "x", seed=3, settings=small_settings(steps=0))
    assert not torch.equal(tensors(initial)["albedo_logit"], tensors(first)["albedo_logit"])  # the steps moved it


def test_the_loop_moves_the_views_towards_the_priors_image():
    settings = dataclasses.replace(small_settings(steps=60), lr=0.1)
    start = generate_asset(prior(), "p", seed=0, settings=dataclasses.replace(settings, steps=0))
    end = generate_asset(prior(), "p", seed=0, settings=settings)

    def error(asset):
        views = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in render_turntable(asset, 4)])
        return (views.float() / 127.5 - 1 - RED_ON_BLUE).abs().mean().item()

    assert error(end) < 0.6 * error(start), (error(start), error(end))


def test_a_turntable_has_the_asked_views_and_size():
    asset = generate_asset(prior(), "p", seed=0, settings=small_settings(steps=0))
    views = render_turntable(asset, n_views=6, size=12)
    assert len(views) == 6 and {v.size for v in views} == {(12, 12)} and {v.mode for v in views} == {"RGB"}


def test_an_asset_file_round_trips(tmp_path):
    asset = generate_asset(prior(), "a red square on a blue background", seed=5, settings=small_settings(steps=2))
    path = save_asset(asset, tmp_path / "asset.safetensors")
    loaded = load_asset(path)
    assert (loaded.prompt, loaded.seed, loaded.steps_done, loaded.settings) == (
        asset.prompt,
        asset.seed,
        2,
        asset.settings,
    )
    for name, value in tensors(asset).items():
        assert torch.equal(value, tensors(loaded)[name]), name
    for before, after in zip(render_turntable(asset, 3), render_turntable(loaded, 3), strict=True):
        assert np.array_equal(np.asarray(before), np.asarray(after))


def test_a_corrupt_or_foreign_asset_file_is_a_clear_error(tmp_path):
    asset = generate_asset(prior(), "p", seed=0, settings=small_settings(steps=0))
    path = save_asset(asset, tmp_path / "asset.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AssetFileError, match="truncated.safetensors is not a readable asset file"):
        load_asset(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a safetensors file at all")
    with pytest.raises(AssetFileError, match="garbage.safetensors"):
        load_asset(garbage)
    with pytest.raises(AssetFileError, match="no asset file at"):
        load_asset(tmp_path / "missing.safetensors")

    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign), metadata={"format": "t2i-arena/mmdit"})
    with pytest.raises(AssetFileError, match="not a 3D asset"):
        load_asset(foreign)
    wrong_shape = tmp_path / "wrong-shape.safetensors"
    data = {name: getattr(asset.field, name).detach() for name in PARAMETER_NAMES}
    data["albedo_logit"] = data["albedo_logit"][:, :5]
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    save_file({k: v.contiguous() for k, v in data.items()}, str(wrong_shape), metadata=metadata)
    with pytest.raises(AssetFileError, match="albedo_logit"):
        load_asset(wrong_shape)


def test_settings_round_trip_through_json_and_refuse_unknown_keys():
    import json

    settings = small_settings(steps=7)
    assert AssetSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    assert AssetSettings.from_dict({"steps": 5}) == dataclasses.replace(AssetSettings(), steps=5)
    with pytest.raises(ValueError, match="unknown asset setting.*guidance"):
        AssetSettings.from_dict({"guidance": 30})
    with pytest.raises(ValueError, match="unknown sds setting.*scale"):
        AssetSettings.from_dict({"sds": {"scale": 30}})
