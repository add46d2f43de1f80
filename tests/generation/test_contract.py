"""generation.contract is the torch boundary: the web process imports it without loading the model stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from generation import contract

HEAVY = ("torch", "diffusers", "transformers", "django")


def test_importing_the_contract_loads_neither_torch_nor_diffusers_nor_django():
    script = (
        f"import json, sys\nimport generation.contract\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) == []


def test_the_check_sees_a_heavy_import_when_there_is_one():
    """The subprocess check above can fail: importing a torch module of generation/ does load torch."""
    script = "import sys\nimport generation.checkpoint_io\nprint('torch' in sys.modules)\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "True"


def test_every_model_kind_has_setting_keys_and_every_checkpoint_format_a_kind():
    assert set(contract.SETTING_KEYS) == set(contract.MODEL_KINDS)
    assert set(contract.KIND_OF_CHECKPOINT_FORMAT.values()) <= set(contract.MODEL_KINDS)
    assert contract.RECIPE_SAMPLER_KEYS <= set().union(*contract.SETTING_KEYS.values())


def test_check_settings_refuses_unknown_kinds_and_foreign_settings():
    settings = {"steps": 4, "scheduler": "ddim"}
    assert contract.check_settings(contract.UNET_BASELINE, settings) is settings
    with pytest.raises(ValueError, match="inhouse models do not take the setting"):
        contract.check_settings(contract.INHOUSE, settings)
    with pytest.raises(ValueError, match="unknown model kind"):
        contract.check_settings("gan", {})
