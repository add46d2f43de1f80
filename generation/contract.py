"""What the web side and the model side must agree on, in one torch-free module.

The web side (the Django site) imports this, never the torch modules of `generation/`, to validate settings,
recognise checkpoint folders and send generation tasks by name; `generation/` imports it to write checkpoints
and to check the settings its backends receive. Importing it loads neither torch nor diffusers nor Django
(a test asserts this), so the web process stays light.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------- model kinds

INHOUSE = "inhouse"  # an in-house MM-DiT checkpoint directory (generation.mmdit.checkpoint format)
DIFFUSERS = "diffusers"  # any diffusers pipeline: a local directory, or a hub id already in the HF cache
UNET_BASELINE = "unet_baseline"  # the UNet eps-prediction baseline trained here
EXTERNAL = "external"  # a model that runs elsewhere (an API, another lab): its images are imported, never generated
# A text-to-3D generator: score distillation (generation.threed) from the prior in `source` (an in-house MM-DiT or
# UNet baseline checkpoint directory). Its "image" is a turntable (TURNTABLE_VIEWS views side by side in one PNG),
# and each one also stores the asset itself (the field's weights, THREED_ASSET_FORMAT).
TEXT_TO_3D = "text_to_3d"
GENERATING_KINDS: tuple[str, ...] = (INHOUSE, DIFFUSERS, UNET_BASELINE, TEXT_TO_3D)  # the kinds a gpu worker loads
MODEL_KINDS: tuple[str, ...] = (*GENERATING_KINDS, EXTERNAL)

# The sampler settings each kind of model understands. Every image stores the settings it was made with.
SETTING_KEYS: dict[str, frozenset[str]] = {
    INHOUSE: frozenset({"steps", "guidance_scale", "shift", "height", "width"}),
    DIFFUSERS: frozenset({"steps", "guidance_scale", "shift", "height", "width", "scheduler"}),
    UNET_BASELINE: frozenset({"steps", "guidance_scale", "shift", "height", "width", "scheduler"}),
    EXTERNAL: frozenset(),  # imported images record no sampler settings: what made them is their provenance
    # score-distillation steps, the prior's guidance scale, and the side in pixels of each turntable view
    TEXT_TO_3D: frozenset({"steps", "guidance_scale", "view_size"}),
}
# Settings a model gets when it names none (the demo domain's 32x32 images, the SD3 paper's 28 steps).
DEFAULT_SAMPLER_SETTINGS: dict[str, int | float] = {
    "steps": 28,
    "guidance_scale": 4.0,
    "shift": 1.0,
    "height": 32,
    "width": 32,
}
# ... and a text-to-3D model's (generation.threed.AssetSettings' measured defaults: 800 steps, guidance 30).
DEFAULT_THREED_SETTINGS: dict[str, int | float] = {"steps": 800, "guidance_scale": 30.0, "view_size": 64}
# A turntable: this many views at azimuths 0, 360/N, ... (elevation 10 degrees), left to right in one PNG whose
# width is N times its height. Every text-to-3D model has the same number, so the count tells no model apart.
TURNTABLE_VIEWS = 8
# The key of a turntable PIL image's `info` under which a text-to-3D backend hands the asset file's bytes to the
# gpu task, which stores them beside the image (png_bytes never writes `info` into the PNG).
ASSET_INFO_KEY = "t2i-arena/threed-asset"

# The settings a checkpoint may recommend in its recipe's "sampler_defaults" (size comes from its training).
RECIPE_SAMPLER_KEYS: frozenset[str] = frozenset({"steps", "guidance_scale", "shift", "scheduler"})
# The UNet baseline's samplers, its "scheduler" setting (the first is the default); it has no timestep shift.
UNET_SCHEDULERS: tuple[str, ...] = ("ddim", "ddpm")

# --------------------------------------------------------------------------------------------- runtime options

# How a gpu worker runs a model, as opposed to what it asks of it (the sampler settings above): numeric precision,
# a compiled denoiser, the memory layout and the batch size. Stored per model (ImageModel.runtime_options); each
# image records the options it was made with (Image.software_versions["runtime"]). Precision changes pixels
# slightly; the others change speed only.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")  # auto: fp16 for diffusers on a GPU, else fp32
# torch.compile modes of the denoiser ("off": eager). reduce-overhead and max-autotune record CUDA graphs on a GPU.
COMPILE_MODES: tuple[str, ...] = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AUTO_BATCH = "auto"  # batch_size: as many images per forward as the accelerator's free memory holds
DEFAULT_RUNTIME_OPTIONS: dict[str, object] = {
    "precision": "auto",
    "compile": "off",
    "fullgraph": False,  # torch.compile(fullgraph=True): fail on a graph break instead of running it eagerly
    "channels_last": False,  # the denoiser's and the VAE's convolutions in NHWC layout
    "batch_size": None,  # None: the job's size (EVALSITE_GENERATION_BATCH_SIZE); an int caps it; AUTO_BATCH
}
# The options each kind understands: the diffusers backend takes them all; the models trained here run in float32
# eagerly and take only the batch size; a text-to-3D model makes one asset at a time.
RUNTIME_OPTION_KEYS: dict[str, frozenset[str]] = {
    DIFFUSERS: frozenset(DEFAULT_RUNTIME_OPTIONS),
    INHOUSE: frozenset({"batch_size"}),
    UNET_BASELINE: frozenset({"batch_size"}),
    TEXT_TO_3D: frozenset(),
    EXTERNAL: frozenset(),
}

# --------------------------------------------------------------------------------------------- checkpoints

CONFIG_FILE = "config.json"  # written last: its presence means the checkpoint is complete
WEIGHTS_FILE = "model.safetensors"
MMDIT_FORMAT = "t2i-arena/mmdit"  # config.json "format" of an in-house MM-DiT checkpoint
UNET_BASELINE_FORMAT = "t2i-arena/unet-baseline"  # ... of a UNet baseline checkpoint
THREED_ASSET_FORMAT = "t2i-arena/threed-asset"  # safetensors metadata "format" of a text-to-3D asset file
# Which model kind a checkpoint folder holds, by the "format" its config.json records.
KIND_OF_CHECKPOINT_FORMAT: dict[str, str] = {MMDIT_FORMAT: INHOUSE, UNET_BASELINE_FORMAT: UNET_BASELINE}

# --------------------------------------------------------------------------------------------- Celery

GENERATE_TASK = "generation.generate_batch"  # args: [job_id]; makes the missing images of one job
GPU_QUEUE = "gpu"  # consumed by workers with concurrency 1 and prefetch 1


def default_settings(kind: str) -> dict:
    """A fresh copy of the settings a model of this kind gets when it names none."""
    return dict(DEFAULT_THREED_SETTINGS if kind == TEXT_TO_3D else DEFAULT_SAMPLER_SETTINGS)


def check_settings(kind: str, settings: dict) -> dict:
    """Refuse settings this kind of model does not understand, with a readable message; returns `settings`."""
    if kind not in SETTING_KEYS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    unknown = set(settings) - SETTING_KEYS[kind]
    if unknown:
        raise ValueError(f"{kind} models do not take the setting(s) {', '.join(sorted(unknown))}")
    return settings


def check_runtime_options(kind: str, options: dict | None) -> dict:
    """The model's runtime options with every default filled in, or a ValueError that says what is wrong."""
    if kind not in RUNTIME_OPTION_KEYS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValueError(f"runtime options must be a JSON object, got {options!r}")
    unknown = set(options) - set(DEFAULT_RUNTIME_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown runtime option(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULT_RUNTIME_OPTIONS)}"
        )
    refused = set(options) - RUNTIME_OPTION_KEYS[kind]
    if refused:
        allowed = ", ".join(sorted(RUNTIME_OPTION_KEYS[kind])) or "none"
        raise ValueError(
            f"{kind} models do not take the runtime option(s) {', '.join(sorted(refused))} (they take: {allowed})"
        )
    merged = {**DEFAULT_RUNTIME_OPTIONS, **options}
    if merged["precision"] not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {merged['precision']!r}")
    if merged["compile"] not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {merged['compile']!r}")
    for key in ("fullgraph", "channels_last"):
        if not isinstance(merged[key], bool):
            raise ValueError(f"{key} must be true or false, got {merged[key]!r}")
    if merged["fullgraph"] and merged["compile"] == "off":
        raise ValueError("fullgraph needs a compile mode (compile is off)")
    size = merged["batch_size"]
    if size is not None and size != AUTO_BATCH and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"batch_size must be a whole number >= 1, {AUTO_BATCH!r} or null, got {size!r}")
    return merged
