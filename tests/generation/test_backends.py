"""Generation backends against real models: tiny diffusers pipelines built and saved here, a tiny UNet baseline
and a tiny in-house MM-DiT checkpoint. The only fake is the out-of-memory backend (CUDA OOM cannot be caused on
a CPU machine)."""

from __future__ import annotations

import io
import json
import shutil
import string

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from generation import backends
from generation.backends import (
    BackendCache,
    DiffusersBackend,
    ModelLoadError,
    OutOfMemory,
    generate_in_batches,
    load_backend,
    png_bytes,
)
from tests.support import (
    tiny_clip_text,
    tiny_inhouse_checkpoint,
    tiny_sd3_transformer,
    tiny_sd3_vae,
    tiny_sd_unet,
    tiny_unet_checkpoint,
    tiny_vae,
)

SETTINGS = {"steps": 2, "guidance_scale": 3.0, "shift": 1.0, "height": 16, "width": 16}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits + "\"'.,!?-":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    vocab["ab"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[("a", "b")], model_max_length=77)


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A StableDiffusionPipeline (UNet, VAE, CLIP, DDIM) with random weights, saved like any hub pipeline."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    tokenizer = clip_tokenizer()
    unet = tiny_sd_unet()
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(4),
        text_encoder=tiny_clip_text(CLIPTextModel, len(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path = tmp_path_factory.mktemp("tiny-sd")
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory):
    """A StableDiffusion3Pipeline (SD3 transformer, 16-channel VAE, two CLIPs, no T5, flow-matching Euler)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    tokenizer = clip_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=tiny_sd3_transformer(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_sd3_vae(),
        text_encoder=tiny_clip_text(CLIPTextModelWithProjection, len(tokenizer), 32),
        tokenizer=tokenizer,
        text_encoder_2=tiny_clip_text(CLIPTextModelWithProjection, len(tokenizer), 32),
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    path = tmp_path_factory.mktemp("tiny-sd3")
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_unet_dir(tmp_path_factory):
    return tiny_unet_checkpoint(tmp_path_factory.mktemp("tiny-unet"))


@pytest.fixture(scope="session")
def tiny_inhouse_dir(tmp_path_factory):
    return tiny_inhouse_checkpoint(tmp_path_factory.mktemp("tiny-inhouse"))


@pytest.fixture(scope="module")
def loaded():
    """Backends loaded once per module (loading MiniLM takes a second or two)."""
    cache = BackendCache(max_size=8)
    return lambda kind, path: cache.get(kind, str(path), "cpu")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def assert_seeded(backend, settings):
    """Same (prompt, seed) -> same image, whatever shares its batch; another seed -> another image."""
    batch = backend.generate(["a red circle", "a blue square", "a red circle"], [0, 1, 0], settings)
    alone = backend.generate(["a blue square"], [1], settings)
    assert len(batch) == 3 and all(im.size == (settings["width"], settings["height"]) for im in batch)
    assert np.abs(pixels(batch[0]) - pixels(batch[2])).max() <= 1
    assert np.abs(pixels(batch[1]) - pixels(alone[0])).max() <= 2
    other_seed = backend.generate(["a red circle"], [7], settings)[0]
    assert np.abs(pixels(batch[0]) - pixels(other_seed)).mean() > 1.0


@pytest.mark.parametrize("which", ["sd", "sd3"])
def test_diffusers_pipelines_load_from_a_saved_directory_and_seed_every_image(which, tiny_sd_dir, tiny_sd3_dir, loaded):
    path = tiny_sd_dir if which == "sd" else tiny_sd3_dir
    backend = loaded("diffusers", path)
    assert isinstance(backend, DiffusersBackend)
    assert type(backend.pipe).__name__ == ("StableDiffusionPipeline" if which == "sd" else "StableDiffusion3Pipeline")
    assert_seeded(backend, SETTINGS)


def test_a_hub_id_loads_from_the_hugging_face_cache_as_a_local_directory(tiny_sd_dir, tmp_path, monkeypatch, loaded):
    """A hub id is looked up in the cache on disk (refs/main -> its snapshot folder); one that is not there fails
    with a reason instead of a download."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--t2i-arena--tiny-sd"
    shutil.copytree(tiny_sd_dir, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    from_cache = load_backend("diffusers", "t2i-arena/tiny-sd")
    image = from_cache.generate(["a red circle"], [0], SETTINGS)[0]
    assert (
        pixels(image) == pixels(loaded("diffusers", tiny_sd_dir).generate(["a red circle"], [0], SETTINGS)[0])
    ).all()
    with pytest.raises(ModelLoadError, match="nor a pipeline in the Hugging Face cache"):
        load_backend("diffusers", "t2i-arena/not-cached")


def test_diffusers_settings_choose_the_scheduler_and_the_timestep_shift(tiny_sd_dir, tiny_sd3_dir, loaded):
    sd, sd3 = loaded("diffusers", tiny_sd_dir), loaded("diffusers", tiny_sd3_dir)
    ddim = sd.generate(["a red circle"], [0], SETTINGS)[0]
    euler = sd.generate(["a red circle"], [0], {**SETTINGS, "scheduler": "EulerDiscreteScheduler"})[0]
    assert type(sd.pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert (pixels(ddim) != pixels(euler)).any()  # random weights: small, but real, differences
    with pytest.raises(ValueError, match="not compatible"):
        sd.generate(["a red circle"], [0], {**SETTINGS, "scheduler": "NoSuchScheduler"})
    with pytest.raises(ValueError, match="no timestep shift"):
        sd.generate(["a red circle"], [0], {**SETTINGS, "shift": 3.0})
    steps3 = {**SETTINGS, "steps": 3}
    shift1 = sd3.generate(["a red circle"], [0], steps3)[0]
    shift3 = sd3.generate(["a red circle"], [0], {**steps3, "shift": 3.0})[0]
    assert sd3.pipe.scheduler.config.shift == 3.0
    assert (pixels(shift1) != pixels(shift3)).any()
    with pytest.raises(ValueError, match="do not take"):
        sd.generate(["a red circle"], [0], {**SETTINGS, "sampler": "euler"})


def test_unet_baseline_and_inhouse_checkpoints_generate_seeded_images(tiny_unet_dir, tiny_inhouse_dir, loaded):
    unet = loaded("unet_baseline", tiny_unet_dir)
    assert_seeded(unet, {**SETTINGS, "steps": 3})
    ddpm = unet.generate(["a red circle"], [0], {**SETTINGS, "steps": 3, "scheduler": "ddpm"})[0]
    assert ddpm.size == (16, 16)
    with pytest.raises(ValueError, match="no timestep shift"):
        unet.generate(["a red circle"], [0], {**SETTINGS, "shift": 3.0})
    inhouse = loaded("inhouse", tiny_inhouse_dir)
    assert_seeded(inhouse, {**SETTINGS, "steps": 3})
    with pytest.raises(ValueError, match="do not take"):
        inhouse.generate(["a red circle"], [0], {**SETTINGS, "scheduler": "ddim"})


@pytest.mark.parametrize("kind", ["inhouse", "unet_baseline", "diffusers"])
def test_a_missing_checkpoint_is_a_readable_load_error(kind, tmp_path):
    with pytest.raises(ModelLoadError, match=f"cannot load {kind} model from .*does not exist"):
        load_backend(kind, str(tmp_path / "nowhere"), "cpu")


@pytest.mark.parametrize("which", ["inhouse", "unet", "sd"])
def test_corrupt_weights_are_a_readable_load_error(which, tiny_inhouse_dir, tiny_unet_dir, tiny_sd_dir, tmp_path):
    import shutil

    source = {"inhouse": tiny_inhouse_dir, "unet": tiny_unet_dir, "sd": tiny_sd_dir}[which]
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    weights = next(p for p in sorted(broken.rglob("*.safetensors")) if "unet" in str(p) or which != "sd")
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, as by a full disk or an interrupted copy
    kind = {"inhouse": "inhouse", "unet": "unet_baseline", "sd": "diffusers"}[which]
    with pytest.raises(ModelLoadError, match=f"cannot load {kind} model from {broken}"):
        load_backend(kind, str(broken), "cpu")


def test_an_unknown_kind_is_refused():
    with pytest.raises(ModelLoadError, match="unknown model kind 'dalle'"):
        load_backend("dalle", "/x", "cpu")


def test_the_cache_loads_each_model_once_and_evicts_the_least_recently_used(
    tiny_unet_dir, tiny_inhouse_dir, tiny_sd_dir
):
    loads = []

    def counting_loader(kind, source, device, dtype, options):
        loads.append(source)
        return load_backend(kind, source, device, dtype, options)

    cache = BackendCache(max_size=2, loader=counting_loader)
    unet = cache.get("unet_baseline", str(tiny_unet_dir), "cpu")
    assert cache.get("unet_baseline", str(tiny_unet_dir), "cpu") is unet
    cache.get("inhouse", str(tiny_inhouse_dir), "cpu")
    cache.get("unet_baseline", str(tiny_unet_dir), "cpu")  # now the most recently used
    cache.get("diffusers", str(tiny_sd_dir), "cpu")  # evicts the in-house model
    assert len(cache) == 2
    assert cache.get("unet_baseline", str(tiny_unet_dir), "cpu") is unet
    cache.get("inhouse", str(tiny_inhouse_dir), "cpu")  # loaded again
    assert loads == [str(tiny_unet_dir), str(tiny_inhouse_dir), str(tiny_sd_dir), str(tiny_inhouse_dir)]
    with pytest.raises(ModelLoadError):
        cache.get("unet_baseline", "/no/such/checkpoint", "cpu")
    assert len(cache) <= 2 and ("unet_baseline", "/no/such/checkpoint", "cpu", "None", "{}") not in cache
    cache.get("unet_baseline", str(tiny_unet_dir), "cpu", options={"batch_size": 2})  # other options: loaded again
    assert loads[-2:] == ["/no/such/checkpoint", str(tiny_unet_dir)]


class OutOfMemoryAbove:
    """The one fake: a backend that raises CUDA's out-of-memory error for batches larger than `limit`."""

    kind = "inhouse"

    def __init__(self, limit: int, error=None):
        self.limit, self.calls = limit, []
        self.error = error or (lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))

    def generate(self, prompts, seeds, settings):
        self.calls.append(len(prompts))
        if len(prompts) > self.limit:
            raise self.error()
        return [Image.new("RGB", (8, 8), (seed % 256, 0, 0)) for seed in seeds]


def test_out_of_memory_halves_the_batch_and_keeps_every_image_with_its_seed():
    fake = OutOfMemoryAbove(limit=3)
    out = list(generate_in_batches(fake, ["p"] * 10, list(range(10)), {}, batch_size=10))
    assert fake.calls == [10, 5, 2, 2, 2, 2, 2]
    assert [list(r) for r, _, _ in out] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [im.getpixel((0, 0))[0] for _, ims, _ in out for im in ims] == list(range(10))
    plain = OutOfMemoryAbove(limit=1, error=lambda: RuntimeError("CUDA error: out of memory"))
    assert sum(len(r) for r, _, _ in generate_in_batches(plain, ["p"] * 3, [0, 1, 2], {}, 4)) == 3
    with pytest.raises(OutOfMemory, match="even with one image per batch"):
        list(generate_in_batches(OutOfMemoryAbove(limit=0), ["p"] * 2, [0, 1], {}, 2))
    broken = OutOfMemoryAbove(limit=0, error=lambda: ValueError("bad settings"))
    with pytest.raises(ValueError, match="bad settings"):
        list(generate_in_batches(broken, ["p"], [0], {}, 1))


def test_png_files_hold_pixels_only(tiny_unet_dir, loaded):
    info = PngImagePlugin.PngInfo()
    info.add_text("model", "secret-model-name")
    tagged = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 8, 7)).save(tagged, format="PNG", pnginfo=info)
    source = Image.open(io.BytesIO(tagged.getvalue()))
    assert source.info.get("model") == "secret-model-name"
    data = png_bytes(source)
    assert b"secret-model-name" not in data
    assert not {b"tEXt", b"iTXt", b"zTXt", b"iCCP", b"eXIf"} & {data[i : i + 4] for i in range(len(data) - 4)}
    assert np.array_equal(pixels(Image.open(io.BytesIO(data))), pixels(source))
    generated = loaded("unet_baseline", tiny_unet_dir).generate(["a red circle"], [0], SETTINGS)[0]
    data = png_bytes(generated)
    assert str(tiny_unet_dir).encode() not in data and b"unet" not in data.lower()


def test_software_versions_name_the_stack():
    versions = backends.software_versions("cpu")
    assert versions["torch"] == torch.__version__ and versions["device"] == "cpu"
    assert {"diffusers", "transformers", "python", "pillow"} <= set(versions)
    json.dumps(versions)


def test_auto_device_is_cpu_without_a_gpu():
    assert backends.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(RuntimeError):
        backends.resolve_device("nonsense-device")


# ----------------------------------------------------------------------------------------------------------
# Runtime options: precision, a compiled denoiser, channels-last, the batch size


def test_runtime_options_are_checked_with_a_reason_and_defaults_filled_in():
    from generation.contract import DEFAULT_RUNTIME_OPTIONS, check_runtime_options

    assert check_runtime_options("diffusers", None) == DEFAULT_RUNTIME_OPTIONS
    assert check_runtime_options("diffusers", {"precision": "bf16"})["precision"] == "bf16"
    assert check_runtime_options("inhouse", {"batch_size": "auto"})["batch_size"] == "auto"
    refusals = [
        ("diffusers", {"precison": "bf16"}, "unknown runtime option.*precison"),
        ("inhouse", {"compile": "default"}, "inhouse models do not take the runtime option.*compile.*batch_size"),
        ("text_to_3d", {"batch_size": 2}, "text_to_3d models do not take.*they take: none"),
        ("diffusers", {"precision": "int8"}, "precision must be one of auto, fp32, bf16, fp16"),
        ("diffusers", {"compile": "fast"}, "compile must be one of off, default"),
        ("diffusers", {"channels_last": "yes"}, "channels_last must be true or false"),
        ("diffusers", {"fullgraph": True}, "fullgraph needs a compile mode"),
        ("diffusers", {"batch_size": 0}, "batch_size must be a whole number >= 1, 'auto' or null"),
        ("diffusers", {"batch_size": True}, "batch_size must be"),
        ("diffusers", {"batch_size": 2.5}, "batch_size must be"),
        ("diffusers", ["bf16"], "must be a JSON object"),
    ]
    for kind, options, reason in refusals:
        with pytest.raises(ValueError, match=reason):
            check_runtime_options(kind, options)
    with pytest.raises(ModelLoadError, match="precision must be one of"):
        load_backend("diffusers", "/anywhere", "cpu", options={"precision": "half"})


@pytest.mark.parametrize("which", ["sd", "sd3"])
def test_a_diffusers_model_runs_in_bfloat16_with_the_images_of_float32(which, tiny_sd_dir, tiny_sd3_dir):
    path = str(tiny_sd_dir if which == "sd" else tiny_sd3_dir)
    full = load_backend("diffusers", path, "cpu")
    half = load_backend("diffusers", path, "cpu", options={"precision": "bf16"})
    assert backends.denoiser_of(full.pipe).dtype == torch.float32
    assert backends.denoiser_of(half.pipe).dtype == torch.bfloat16 and half.pipe.vae.dtype == torch.bfloat16
    assert half.options.record("diffusers", "cpu")["precision"] == "bfloat16"
    prompts, seeds = ["a red circle", "a blue square"], [0, 1]
    a, b = full.generate(prompts, seeds, SETTINGS), half.generate(prompts, seeds, SETTINGS)
    # the same images up to bf16's rounding (8 bits of mantissa), and still one image per seed
    for x, y in zip(a, b, strict=True):
        assert np.abs(pixels(x) - pixels(y)).mean() < 6.0
    assert np.abs(pixels(b[0]) - pixels(b[1])).mean() > 3 * np.abs(pixels(a[0]) - pixels(b[0])).mean()
    assert_seeded(half, SETTINGS)


def test_a_compiled_channels_last_denoiser_makes_the_eager_models_images(tiny_sd_dir):
    """torch.compile (inductor, C++ on the CPU) of the UNet, and its convolutions in NHWC: the denoiser runs as
    a compiled graph (dynamo counts one frame per new input shape) and the pixels are the eager model's."""
    import torch._dynamo

    eager = load_backend("diffusers", str(tiny_sd_dir), "cpu")
    options = {"compile": "default", "fullgraph": True, "channels_last": True}
    fast = load_backend("diffusers", str(tiny_sd_dir), "cpu", options=options)
    unet = fast.pipe.unet
    assert type(unet).__name__ == "UNet2DConditionModel"  # compiled in place: the pipeline's code sees its class
    assert unet._compiled_call_impl is not None
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    prompts, seeds = ["a red circle", "a blue square"], [3, 4]
    want = eager.generate(prompts, seeds, SETTINGS)
    got = fast.generate(prompts, seeds, SETTINGS)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    for x, y in zip(want, got, strict=True):
        assert np.abs(pixels(x) - pixels(y)).max() <= 2
    assert fast.options.record("diffusers", "cpu") == {
        "precision": "float32",
        "compile": "default",
        "fullgraph": True,
        "channels_last": True,
    }
    # the batch-size probe runs the compiled denoiser eagerly: its shapes (1 and 2 images) compile nothing
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    metered = MeteredBackend(fast)
    assert backends.images_that_fit(metered, SETTINGS, metered) == 10
    assert metered.calls == [(1, 1), (2, 1)]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


class MeteredBackend:
    """A real backend, and the one fake: an accelerator's memory (a CPU has no allocator statistics to read).
    Each call "allocates" fixed + per_image * images at its peak, on top of the weights."""

    def __init__(self, backend, weights=5_000, fixed=1_000, per_image=300, total=10_000, oom_above=None):
        self.backend, self.weights, self.fixed, self.per_image, self.total = backend, weights, fixed, per_image, total
        self.oom_above, self.calls, self._peak = oom_above, [], weights

    def generate(self, prompts, seeds, settings):
        self.calls.append((len(prompts), settings["steps"]))
        if self.oom_above is not None and len(prompts) > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self._peak = max(self._peak, self.weights + self.fixed + self.per_image * len(prompts))
        return self.backend.generate(prompts, seeds, settings)

    # MemoryMeter
    def reset_peak(self):
        self._peak = self.weights

    def allocated(self):
        return self.weights

    def peak(self):
        return self._peak

    def available(self):
        return self.total - self.weights


def test_the_batch_size_is_the_jobs_a_cap_or_what_free_memory_holds(tiny_unet_dir, loaded):
    from generation.backends import RuntimeOptions, batch_size_for

    backend = loaded("unet_baseline", tiny_unet_dir)
    options = RuntimeOptions.of("unet_baseline", {})
    assert batch_size_for(backend, options, SETTINGS, "cpu", 16) == 16
    assert batch_size_for(backend, RuntimeOptions.of("unet_baseline", {"batch_size": 4}), SETTINGS, "cpu", 16) == 4
    assert batch_size_for(backend, RuntimeOptions.of("unet_baseline", {"batch_size": 40}), SETTINGS, "cpu", 16) == 16
    auto = RuntimeOptions.of("unet_baseline", {"batch_size": "auto"})
    assert batch_size_for(backend, auto, SETTINGS, "cpu", 16) == 16  # no accelerator memory to measure

    metered = MeteredBackend(backend)
    # 5,000 available, 0.85 of it planned: (4,250 - 1,000 fixed) // 300 per image = 10 images
    assert batch_size_for(metered, auto, SETTINGS, "cuda", 16, meter=metered) == 10
    assert metered.calls == [(1, 1), (2, 1)]  # two one-step probes
    assert batch_size_for(metered, auto, SETTINGS, "cuda", 6, meter=metered) == 6  # never above the job's size
    assert batch_size_for(metered, auto, SETTINGS, "cuda", 16, meter=metered) == 10
    assert len(metered.calls) == 2  # measured once per model and image shape
    bigger = {**SETTINGS, "height": 32, "width": 32}
    batch_size_for(metered, auto, bigger, "cuda", 16, meter=metered)
    assert len(metered.calls) == 4

    starved = MeteredBackend(backend, oom_above=1)  # not even the probe of two fits: one image per call
    assert batch_size_for(starved, auto, SETTINGS, "cuda", 16, meter=starved) == 1
