"""Generation backends: one interface over the three kinds of model the platform compares.

    backend = load_backend("inhouse", "demo_models/mmdit-demo", device="cpu")
    images = backend.generate(["a red circle on a blue background"], [0], {"steps": 28, "guidance_scale": 4.0,
                              "shift": 1.0, "height": 32, "width": 32})

Kinds (the `ImageModel.kind` values):
    inhouse        an in-house MM-DiT checkpoint directory (generation.mmdit.pipeline.InHousePipeline)
    diffusers      any diffusers pipeline: a local directory or a hub id (DiffusionPipeline.from_pretrained;
                   a hub id only works where the deployment's Hugging Face cache holds the weights)
    unet_baseline  the UNet eps-prediction baseline (generation.unet.pipeline.UNetBaselinePipeline)
    text_to_3d     score distillation (generation.threed) from a prior (any of the above's checkpoints); its
                   images are turntables of the asset, and each carries the asset file (TextTo3DBackend)

Settings: steps, guidance_scale, shift, height, width, and scheduler (diffusers: a scheduler class name such as
"DDIMScheduler" from the pipeline's compatibles; unet_baseline: "ddim" or "ddpm"). Every image has its own seed:
its initial noise comes from its own torch.Generator, so an image does not depend on its batch-mates.

Runtime options (RuntimeOptions; generation.contract.check_runtime_options) say how a model runs, not what it
makes: a diffusers pipeline in fp32, bf16 or fp16, its denoiser (pipe.unet or pipe.transformer) compiled with
torch.compile, channels-last convolutions; for every kind the batch size, fixed or chosen from free GPU memory
(batch_size_for).

Plain PyTorch and diffusers only: nothing here knows Django (generation/tasks.py is the bridge).
"""

from __future__ import annotations

import gc
import io
import json
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from generation import training
from generation.contract import (
    ASSET_INFO_KEY,
    AUTO_BATCH,
    CONFIG_FILE,
    DEFAULT_THREED_SETTINGS,
    DIFFUSERS,
    EXTERNAL,
    INHOUSE,
    KIND_OF_CHECKPOINT_FORMAT,
    TEXT_TO_3D,
    TURNTABLE_VIEWS,
    UNET_BASELINE,
    check_runtime_options,
    check_settings,
)
from generation.contract import DEFAULT_SAMPLER_SETTINGS as DEFAULTS
from generation.sampling import check_prompts

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model could not be loaded (missing directory, corrupt weights, unknown format...)."""


class OutOfMemory(RuntimeError):
    """Generation ran out of accelerator memory even with one image per batch."""


@runtime_checkable
class Backend(Protocol):
    kind: str

    @classmethod
    def load(cls, source: str, device: str, dtype: torch.dtype, options: RuntimeOptions | None = None) -> Backend: ...

    def generate(self, prompts: list[str], seeds: list[int], settings: dict) -> list[Image.Image]: ...


def _size(settings: dict) -> tuple[int | None, int | None]:
    return settings.get("height"), settings.get("width")


# ----------------------------------------------------------------------------------------------------------
# The three backends


class _TrainedHereBackend:
    """A checkpoint directory trained by this project, run by its own pipeline class in float32."""

    kind = ""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    @staticmethod
    def pipeline_class():
        raise NotImplementedError

    @classmethod
    def load(
        cls, source: str, device: str, dtype: torch.dtype = torch.float32, options: RuntimeOptions | None = None
    ) -> _TrainedHereBackend:
        return cls(cls.pipeline_class().from_checkpoint(source, device=device))

    def extra_arguments(self, prompts: list[str], settings: dict) -> dict:
        return {}

    def generate(self, prompts: list[str], seeds: list[int], settings: dict) -> list[Image.Image]:
        check_settings(self.kind, settings)
        height, width = _size(settings)
        return self.pipeline(
            list(prompts),
            list(seeds),
            steps=int(settings.get("steps", DEFAULTS["steps"])),
            guidance_scale=float(settings.get("guidance_scale", DEFAULTS["guidance_scale"])),
            shift=float(settings.get("shift", DEFAULTS["shift"])),
            height=height,
            width=width,
            **self.extra_arguments(prompts, settings),
        )


class InHouseBackend(_TrainedHereBackend):
    """An in-house MM-DiT checkpoint directory (model.safetensors + config.json). Runs in float32."""

    kind = INHOUSE

    @staticmethod
    def pipeline_class():
        from generation.mmdit.pipeline import InHousePipeline

        return InHousePipeline

    def extra_arguments(self, prompts: list[str], settings: dict) -> dict:
        return {"batch_size": max(1, len(prompts))}


class UNetBaselineBackend(_TrainedHereBackend):
    """The UNet eps-prediction baseline trained here (generation.unet). Runs in float32."""

    kind = UNET_BASELINE

    @staticmethod
    def pipeline_class():
        from generation.unet.pipeline import UNetBaselinePipeline

        return UNetBaselinePipeline

    def extra_arguments(self, prompts: list[str], settings: dict) -> dict:
        return {"scheduler": settings.get("scheduler") or "ddim"}


def _looks_like_path(source: str) -> bool:
    """A hub id is "name" or "org/name"; anything else (absolute, relative, existing) is a directory."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or Path(source).exists()


def _cached_snapshot(repo_id: str) -> Path:
    """The folder of the Hugging Face cache that holds hub id `repo_id` (its main revision), found on disk only:
    huggingface_hub, even with local_files_only, may call the hub (its user-agent lookup) unless HF_HUB_OFFLINE
    is set, so a hub id is turned into a local directory before diffusers sees it."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, "model_index.json")
    except Exception:  # not a valid repo id
        cached = None
    if not isinstance(cached, str):
        raise FileNotFoundError(
            f"{repo_id} is neither a local directory nor a pipeline in the Hugging Face cache (nothing is downloaded)"
        )
    return Path(cached).parent


def _null_components(directory: Path) -> dict:
    """Components a pipeline was saved without ([null, null] in model_index.json): diffusers only reloads
    such a pipeline when they are passed as None again (e.g. SD3 without T5, SD without safety checker)."""
    index = directory / "model_index.json"
    try:
        entries = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{index} is not valid JSON: {e}") from e
    return {
        name: None
        for name, value in entries.items()
        if not name.startswith("_") and isinstance(value, list) and value == [None, None]
    }


@dataclass(frozen=True)
class RuntimeOptions:
    """How a gpu worker runs one model (generation.contract.DEFAULT_RUNTIME_OPTIONS says what each field means)."""

    precision: str = "auto"
    compile: str = "off"
    fullgraph: bool = False
    channels_last: bool = False
    batch_size: int | str | None = None

    @classmethod
    def of(cls, kind: str, options: dict | None = None) -> RuntimeOptions:
        """Checked options of a model of this kind (ValueError with the reason when they are wrong)."""
        return cls(**check_runtime_options(kind, options))

    def dtype(self, kind: str, device: str) -> torch.dtype:
        if self.precision == "auto":
            return default_dtype(kind, device)
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    def record(self, kind: str, device: str) -> dict:
        """What an image stores of how it was made (the precision resolved: "auto" is not reproducible)."""
        return {
            "precision": str(self.dtype(kind, device)).removeprefix("torch."),
            "compile": self.compile,
            "fullgraph": self.fullgraph,
            "channels_last": self.channels_last,
        }


def denoiser_of(pipe) -> torch.nn.Module:
    """The network a diffusers pipeline calls at every step: its UNet, or its transformer (SD3, Flux, PixArt...)."""
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise ValueError(f"{type(pipe).__name__} has no unet or transformer to compile")


def apply_runtime_options(pipe, options: RuntimeOptions) -> None:
    """Channels-last layout (denoiser and VAE) and torch.compile of the denoiser, in place.

    The compile is lazy: the first call at each batch size and image size compiles (seconds to minutes), later
    calls run the compiled graph. The module keeps its class (nn.Module.compile), so the pipeline's own code that
    reads the denoiser's config or dtype works unchanged."""
    denoiser = denoiser_of(pipe)
    if options.channels_last:
        vae = getattr(pipe, "vae", None)
        for module in (denoiser, vae) if isinstance(vae, torch.nn.Module) else (denoiser,):
            # Module.to converts every 4-D parameter (its typing stubs lack the memory_format keyword it takes)
            module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if options.compile != "off":
        mode = None if options.compile == "default" else options.compile
        denoiser.compile(mode=mode, fullgraph=options.fullgraph, dynamic=False)


def _cast_what_loading_left(pipe, dtype: torch.dtype) -> None:
    """Cast the components from_pretrained left in another dtype. diffusers 0.42 without accelerate loads an
    SD3Transformer2DModel in float32 whatever dtype it is asked for (measured here: a UNet comes back in the dtype,
    the SD3 transformer does not), so an fp16 or bf16 SD3 pipeline failed at its first step ("Input type
    (c10::BFloat16) and bias type (float) should be the same"). A component that keeps some modules in float32
    on purpose (`_keep_in_fp32_modules`, T5) is left as loaded."""
    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module) or getattr(component, "_keep_in_fp32_modules", None):
            continue
        floating = {p.dtype for p in component.parameters() if p.is_floating_point()}
        if floating and floating != {dtype}:
            log.info("casting %s from %s to %s", name, ", ".join(sorted(map(str, floating))), dtype)
            component.to(dtype)


class DiffusersBackend:
    """Any diffusers text-to-image pipeline, from a local directory or a hub id."""

    kind = DIFFUSERS

    def __init__(self, pipe, device: str, options: RuntimeOptions | None = None):
        self.pipe, self.device = pipe, device
        self.options = options or RuntimeOptions()
        self._default_scheduler = pipe.scheduler
        self._schedulers: dict[tuple, object] = {}

    @classmethod
    def from_pipeline(
        cls, pipe, device: str, dtype: torch.dtype | None = None, options: RuntimeOptions | None = None
    ) -> DiffusersBackend:
        """A backend around a pipeline already built: moved to the device (and cast to `dtype` when given: a
        pipeline loaded in its dtype is not cast again, which would undo the modules diffusers keeps in float32),
        runtime options applied."""
        options = options or RuntimeOptions()
        pipe.set_progress_bar_config(disable=True)
        pipe = pipe.to(device) if dtype is None else pipe.to(device, dtype)
        apply_runtime_options(pipe, options)
        return cls(pipe, device, options)

    @classmethod
    def load(
        cls, source: str, device: str, dtype: torch.dtype = torch.float32, options: RuntimeOptions | None = None
    ) -> DiffusersBackend:
        from diffusers import DiffusionPipeline

        if _looks_like_path(source):
            path = Path(source).expanduser()
            if not path.is_dir():
                raise FileNotFoundError(f"diffusers pipeline directory {source} does not exist")
            if not (path / "model_index.json").is_file():
                raise FileNotFoundError(f"{source} has no model_index.json: not a saved diffusers pipeline")
        else:
            path = _cached_snapshot(source)
        # a local directory, and local_files_only: nothing is ever downloaded, no hub is ever asked
        pipe = DiffusionPipeline.from_pretrained(path, dtype=dtype, local_files_only=True, **_null_components(path))
        _cast_what_loading_left(pipe, dtype)
        return cls.from_pipeline(pipe, device, options=options)

    def _scheduler(self, name: str | None, shift: float | None):
        """The pipeline's scheduler, or the named compatible one, with the timestep shift applied."""
        key = (name, shift)
        if key not in self._schedulers:
            base = self._default_scheduler
            cls = type(base)
            if name and name != cls.__name__:
                compatible = {c.__name__: c for c in base.compatibles}
                if name not in compatible:
                    raise ValueError(
                        f"scheduler {name!r} is not compatible with this pipeline; choose one of "
                        f"{', '.join(sorted(compatible))}"
                    )
                cls = compatible[name]
            overrides = {}
            if shift is not None:
                if "shift" in cls.from_config(base.config).config:
                    overrides["shift"] = float(shift)
                elif float(shift) != 1.0:
                    raise ValueError(f"scheduler {cls.__name__} has no timestep shift; use shift 1.0")
            self._schedulers[key] = cls.from_config(base.config, **overrides)
        return self._schedulers[key]

    def generate(self, prompts: list[str], seeds: list[int], settings: dict) -> list[Image.Image]:
        check_settings(self.kind, settings)
        check_prompts(prompts, seeds)
        if not prompts:
            return []
        self.pipe.scheduler = self._scheduler(settings.get("scheduler"), settings.get("shift"))
        height, width = _size(settings)
        # One CPU generator per image: an image's noise depends on its seed only (not on batch-mates or device).
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        out = self.pipe(
            prompt=list(prompts),
            num_inference_steps=int(settings.get("steps", DEFAULTS["steps"])),
            guidance_scale=float(settings.get("guidance_scale", DEFAULTS["guidance_scale"])),
            height=height,
            width=width,
            generator=generators,
            output_type="pil",
        )
        return list(out.images)


def prior_kind(source: str) -> str:
    """Which prior a text-to-3D model's source holds: a checkpoint folder trained here (by the format its
    config.json records) or a saved diffusers pipeline (model_index.json)."""
    path = Path(source).expanduser()
    if (path / "model_index.json").is_file():
        return DIFFUSERS
    config = path / CONFIG_FILE
    if not config.is_file():
        raise FileNotFoundError(f"{source} holds no checkpoint ({CONFIG_FILE}) and no diffusers pipeline")
    fmt = json.loads(config.read_text()).get("format")
    if fmt not in KIND_OF_CHECKPOINT_FORMAT:
        raise ValueError(f"{source} is a checkpoint of format {fmt!r}, which is no text-to-image prior")
    return KIND_OF_CHECKPOINT_FORMAT[fmt]


def turntable_strip(views: Sequence[Image.Image]) -> Image.Image:
    """The views (square, equal sizes) left to right in one RGB image, N times as wide as it is high."""
    side = views[0].height
    strip = Image.new("RGB", (side * len(views), side))
    for i, view in enumerate(views):
        if view.size != (side, side):
            raise ValueError(f"turntable views must be {side}x{side} squares, got {view.size}")
        strip.paste(view.convert("RGB"), (i * side, 0))
    return strip


class TextTo3DBackend:
    """Text to 3D by score distillation (generation.threed) from the text-to-image prior in `source`.

    `generate` makes one asset per (prompt, seed) and returns its turntable: TURNTABLE_VIEWS views at azimuths
    0, 360/N, ... (elevation 10 degrees), view_size pixels each, side by side in one image, whose
    `info[ASSET_INFO_KEY]` holds the asset file's bytes (generation.threed.save_asset) for the caller to store.
    Settings: steps (score-distillation steps), guidance_scale (the prior's), view_size; everything else is
    generation.threed.AssetSettings' measured default. An asset depends on its prompt and seed only."""

    kind = TEXT_TO_3D

    def __init__(self, prior):
        self.prior = prior

    @classmethod
    def load(
        cls, source: str, device: str, dtype: torch.dtype = torch.float32, options: RuntimeOptions | None = None
    ) -> TextTo3DBackend:
        from generation.threed import load_prior

        return cls(load_prior(prior_kind(source), source, device))

    def generate(self, prompts: list[str], seeds: list[int], settings: dict) -> list[Image.Image]:
        import dataclasses
        import tempfile

        from generation.threed import AssetSettings, generate_asset, render_turntable, save_asset

        check_settings(self.kind, settings)
        check_prompts(prompts, seeds)
        settings = {**DEFAULT_THREED_SETTINGS, **settings}
        base = AssetSettings()
        asset_settings = dataclasses.replace(
            base,
            steps=int(settings["steps"]),
            sds=dataclasses.replace(base.sds, guidance_scale=float(settings["guidance_scale"])),
        )
        turntables = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            asset = generate_asset(self.prior, prompt, int(seed), asset_settings)
            views = render_turntable(asset, n_views=TURNTABLE_VIEWS, size=int(settings["view_size"]))
            strip = turntable_strip(views)
            with tempfile.TemporaryDirectory() as folder:
                path = save_asset(asset, Path(folder) / "asset.safetensors")
                strip.info[ASSET_INFO_KEY] = path.read_bytes()
            turntables.append(strip)
        return turntables


BACKENDS: dict[str, type[_TrainedHereBackend] | type[DiffusersBackend] | type[TextTo3DBackend]] = {
    INHOUSE: InHouseBackend,
    DIFFUSERS: DiffusersBackend,
    UNET_BASELINE: UNetBaselineBackend,
    TEXT_TO_3D: TextTo3DBackend,
}


# ----------------------------------------------------------------------------------------------------------
# Devices, loading and the per-worker cache


def resolve_device(name: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; anything else is checked and returned."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    torch.device(name)  # raises on nonsense
    return name


def default_dtype(kind: str, device: str) -> torch.dtype:
    """Diffusers pipelines run in float16 on a GPU; everything else (and everything on the CPU) in float32."""
    return torch.float16 if kind == DIFFUSERS and device.startswith("cuda") else torch.float32


def load_backend(
    kind: str, source: str, device: str = "cpu", dtype: torch.dtype | None = None, options: dict | None = None
) -> Backend:
    """Load one model with its runtime options (a dict as stored on the model; `dtype`, when given, overrides
    their precision); any failure becomes a ModelLoadError whose message says what and why."""
    if kind == EXTERNAL:
        raise ModelLoadError("an external model never generates: its images are imported (manage.py import_images)")
    if kind not in BACKENDS:
        raise ModelLoadError(f"unknown model kind {kind!r}; known: {', '.join(BACKENDS)}")
    try:
        runtime = RuntimeOptions.of(kind, options)
        return BACKENDS[kind].load(source, device, dtype or runtime.dtype(kind, device), runtime)
    except Exception as e:  # FileNotFoundError, ValueError, OSError, safetensors errors, diffusers errors...
        reason = str(e) or type(e).__name__
        raise ModelLoadError(f"cannot load {kind} model from {source}: {reason}") from e


def release_memory(collect: bool = True) -> None:
    """Free what a dropped model or a failed batch held (the garbage collector, then CUDA's cached blocks)."""
    if collect:
        gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class BackendCache:
    """Loaded backends of one worker process, least recently used evicted first.

    A worker serves many jobs of the same few models: each model is loaded once and kept while it is among
    the `max_size` most recently used. Eviction happens before a load, so at most `max_size` models are in
    memory at any time. Failed loads are not cached: a repaired checkpoint works on the next job."""

    def __init__(self, max_size: int = 2, loader=load_backend):
        if max_size < 1:
            raise ValueError("the model cache holds at least one model")
        self.max_size, self.loader = max_size, loader
        self._entries: OrderedDict[tuple, Backend] = OrderedDict()
        self.loads = 0

    def get(
        self, kind: str, source: str, device: str, dtype: torch.dtype | None = None, options: dict | None = None
    ) -> Backend:
        """The loaded backend; a model whose runtime options changed since it was loaded is loaded again."""
        key = (kind, source, device, str(dtype), json.dumps(options or {}, sort_keys=True))
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        while len(self._entries) >= self.max_size:
            self._entries.popitem(last=False)
            release_memory()
        backend = self.loader(kind, source, device, dtype, options)
        self.loads += 1
        self._entries[key] = backend
        return backend

    def __contains__(self, key: tuple) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        release_memory()


# ----------------------------------------------------------------------------------------------------------
# Batches, out-of-memory and files


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class generate_in_batches:  # noqa: N801 - used like a generator function
    """Iterate (indices, images, seconds per image) batch after batch; `.batch_size` is the size in use.

    On an out-of-memory error the batch is retried at half the size (and the smaller size is kept for the
    rest); at batch size 1 the error becomes OutOfMemory. Any other error propagates unchanged."""

    def __init__(self, backend: Backend, prompts: Sequence[str], seeds: Sequence[int], settings: dict, batch_size: int):
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        self.backend, self.prompts, self.seeds, self.settings = backend, list(prompts), list(seeds), settings
        self.batch_size = max(1, int(batch_size))

    def __iter__(self) -> Iterator[tuple[range, list[Image.Image], float]]:
        start = 0
        while start < len(self.prompts):
            stop = min(start + self.batch_size, len(self.prompts))
            t0 = time.perf_counter()
            try:
                images = self.backend.generate(self.prompts[start:stop], self.seeds[start:stop], self.settings)
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                release_memory(collect=torch.cuda.is_available())
                if self.batch_size == 1:
                    raise OutOfMemory("out of memory even with one image per batch") from e
                self.batch_size = max(1, self.batch_size // 2)
                log.warning("out of memory with %d images per batch; retrying with %d", stop - start, self.batch_size)
                continue
            if len(images) != stop - start:
                raise RuntimeError(f"the backend returned {len(images)} images for {stop - start} prompts")
            yield range(start, stop), images, (time.perf_counter() - t0) / (stop - start)
            start = stop


class MemoryMeter(Protocol):
    """An accelerator's memory, in bytes, as the batch-size probe reads it."""

    def reset_peak(self) -> None: ...

    def allocated(self) -> int: ...

    def peak(self) -> int: ...  # the most allocated at once since reset_peak

    def available(self) -> int: ...  # what further allocations can still get


class CudaMemory:
    """MemoryMeter of one CUDA device: torch's allocator statistics, and the driver's free memory plus what the
    allocator holds unused (its cached blocks serve the next batch as well as free memory does)."""

    def __init__(self, device: str):
        self.device = torch.device(device)

    def reset_peak(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def allocated(self) -> int:
        return torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device)

    def available(self) -> int:
        free, _total = torch.cuda.mem_get_info(self.device)
        return free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)


PROBE_PROMPT = "a probe of the memory one image needs"
MEMORY_HEADROOM = 0.85  # the share of the available memory a chosen batch may plan to use
_measured_batches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # backend -> {image shape: images}


def images_that_fit(backend: Backend, settings: dict, meter: MemoryMeter, headroom: float = MEMORY_HEADROOM) -> int:
    """How many images one call can make in the memory `meter` reports available (at least 1).

    Two one-step generations, of 1 and of 2 images, measure the peak memory a call needs beyond what is already
    held (the weights): fixed + n * per_image. They run eagerly (a compiled denoiser would compile for each probe
    shape; eager attention and activations take at least as much memory as compiled ones, so the estimate errs
    on the safe side). A batch that still runs out of memory is halved by generate_in_batches."""
    probe = {**settings, "steps": 1}
    base = meter.allocated()
    peaks = []
    with torch.compiler.set_stance("force_eager"):
        for n in (1, 2):
            meter.reset_peak()
            backend.generate([PROBE_PROMPT] * n, list(range(n)), probe)
            peaks.append(meter.peak() - base)
    release_memory()
    per_image = max(peaks[1] - peaks[0], 1)
    fixed = max(peaks[0] - per_image, 0)
    fits = int((meter.available() * headroom - fixed) // per_image)
    log.info(
        "batch size from free memory: %.2f GiB per image, %.2f GiB fixed, %.2f GiB available: %d images",
        per_image / 2**30,
        fixed / 2**30,
        meter.available() / 2**30,
        fits,
    )
    return max(1, fits)


def batch_size_for(
    backend: Backend,
    options: RuntimeOptions,
    settings: dict,
    device: str,
    job_size: int,
    meter: MemoryMeter | None = None,
) -> int:
    """Images per backend call for a job of `job_size` images: the job's size, at most the model's batch_size
    option, or with batch_size "auto" as many as the free accelerator memory holds (measured once per model and
    image shape in this process; on a CPU, where memory is not what limits a batch, the job's size)."""
    job_size = max(1, int(job_size))
    if options.batch_size is None:
        return job_size
    if options.batch_size != AUTO_BATCH:
        return max(1, min(job_size, int(options.batch_size)))
    if meter is None:
        if not device.startswith("cuda"):
            return job_size
        meter = CudaMemory(device)
    shape = (settings.get("height"), settings.get("width"), float(settings.get("guidance_scale", 0)) > 1.0)
    known = _measured_batches.setdefault(backend, {})
    if shape not in known:
        try:
            known[shape] = images_that_fit(backend, settings, meter)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            release_memory()
            known[shape] = 1
    return max(1, min(job_size, known[shape]))


def png_bytes(image: Image.Image) -> bytes:
    """The image as a PNG with pixels only: no text chunks, no ICC profile, no EXIF (nothing names a model)."""
    clean = Image.fromarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG", pnginfo=None)
    return buffer.getvalue()


@cache
def software_versions(device: str = "cpu") -> dict:
    """What produced an image, stored with it so results can be reproduced: the software a checkpoint records
    (generation.training.software_versions), plus Pillow, the device and, on a GPU, CUDA and the GPU's name."""
    import PIL

    versions = {**training.software_versions(), "pillow": PIL.__version__, "device": device}
    if device.startswith("cuda"):
        versions["cuda"] = torch.version.cuda
        versions["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return versions
