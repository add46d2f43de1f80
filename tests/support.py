"""What the tests (and bench/task_overhead.py) share besides fixtures: real files, real checkpoints, real workers.

- `png_bytes`, `PARTI_PROMPTS`, `REPO_ROOT`: real PNG bytes and the PartiPrompts file.
- `tiny_unet_checkpoint` / `tiny_inhouse_checkpoint`: real, small, randomly initialised checkpoints in the
  formats the backends load, fast enough for tests on a CPU (torch is imported only when one is built).
- `use_broker_folder` / `broker_options` / `queued_messages`: point this process's Celery app at a private
  filesystem broker folder, so a test's messages never mix with a development worker's, and read what waits.
- `WorkerProcess`: a real Celery worker started with `bin/process worker` (the command bin/up and docker/
  use) in its own process group, sharing this process's database, broker and media folder; it can be stopped
  gracefully or killed with SIGKILL. `wait_for` polls for a condition and fails with the worker's log.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import numpy as np

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SHARED_DIR = os.path.abspath(os.path.join(REPO_ROOT, "..", "shared"))
# The reference copy lives in ../shared; the repository carries the same file for fresh machines.
PARTI_PROMPTS = next(
    p
    for p in (os.path.join(SHARED_DIR, "data", "PartiPrompts.tsv"), os.path.join(REPO_ROOT, "data", "PartiPrompts.tsv"))
    if os.path.exists(p)
)


def png_bytes(seed: int, size: int = 32) -> bytes:
    """A real PNG of random pixels; different seeds give different files."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def ordered_votes(strengths: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n votes on uniformly drawn model pairs, in the order cast: (a, b, score of a), ties (10%) as 0.5."""
    rng = np.random.default_rng(seed)
    k = len(strengths)
    a = rng.integers(0, k, n)
    b = (a + rng.integers(1, k, n)) % k
    p = 1 / (1 + np.exp(strengths[b] - strengths[a]))
    u = rng.random(n)
    return a, b, np.where(u < 0.1, 0.5, np.where(u < 0.1 + 0.9 * p, 1.0, 0.0))


def drawn_png(prompt: str, seed: int) -> bytes:
    """A PNG of what a demo prompt asks, drawn by the demo domain (different seeds place it differently);
    random pixels for a prompt outside the domain. Gold checks are only made where the pixels confirm them."""
    from PIL import Image as PILImage

    from generation import demo_domain

    try:
        pixels = demo_domain.render(demo_domain.parse_prompt(prompt), np.random.default_rng(seed))
    except ValueError:
        return png_bytes(seed)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------------------
# Tiny checkpoints

TINY_UNET = {
    "sample_size": 16,
    "space_to_depth": 2,
    "block_out_channels": [16, 32],
    "norm_num_groups": 8,
    "attention_head_dim": 8,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
}


def tiny_unet_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """A UNet baseline checkpoint (about 0.3M parameters, 16x16 images, MiniLM text) with random weights."""
    import torch

    from generation.unet.checkpoint import save_checkpoint
    from generation.unet.model import UNetBaseline, UNetBaselineConfig

    torch.manual_seed(seed)
    model = UNetBaseline(UNetBaselineConfig(**TINY_UNET))
    return save_checkpoint(model, {"text_encoder": "minilm", "trained_by": "tests (random weights)"}, path)


# ------------------------------------------------------------------ tiny diffusers components (random weights)
# The parts of the tiny StableDiffusionPipeline and StableDiffusion3Pipeline that the backend, 3D-prior and bench
# tests build (bench/diffusers_throughput.py --tiny too). Each seeds torch with 0, so a part is the same every time.


def tiny_sd_unet():
    """An SD-style UNet2DConditionModel on 8x8 latents (channels 16 and 32, cross-attention width 32)."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_sd3_transformer():
    """An SD3Transformer2DModel on 8x8 latents (2 joint blocks, 2 heads of 8, text width 64)."""
    import torch
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    return SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=64,
        caption_projection_dim=16,
        pooled_projection_dim=64,
        out_channels=16,
        pos_embed_max_size=16,
    )


def tiny_vae(latent_channels: int, **kw):
    """An AutoencoderKL with 2x downsampling (channels 16 and 32)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
        sample_size=16,
        **kw,
    )


def tiny_sd3_vae():
    """tiny_vae as SD3's: 16 latent channels, no quant convs, SD3's shift and scale."""
    return tiny_vae(16, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)


def tiny_clip_text(cls, vocab_size: int, projection_dim: int | None = None):
    """A CLIP text model of class `cls` (CLIPTextModel, CLIPTextModelWithProjection): 2 layers of width 32."""
    import torch
    from transformers import CLIPTextConfig

    torch.manual_seed(0)
    kw = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    if projection_dim:
        kw["projection_dim"] = projection_dim
    return cls(CLIPTextConfig(**kw))


def tiny_inhouse_checkpoint(path: str | Path, seed: int = 0, step: int | None = None) -> Path:
    """An in-house MM-DiT checkpoint (2 blocks, width 32, 16x16 pixels, MiniLM text) with random weights."""
    import torch

    from generation.mmdit.checkpoint import save_checkpoint
    from generation.mmdit.model import MMDiT, MMDiTConfig

    torch.manual_seed(seed)
    model = MMDiT(
        MMDiTConfig(
            in_channels=3,
            sample_size=16,
            patch_size=4,
            depth=2,
            hidden_size=32,
            num_heads=2,
            text_dim=384,
            pooled_dim=384,
        )
    )
    with torch.no_grad():  # adaLN-Zero starts at zero: randomise so that images depend on prompt and seed
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    recipe: dict = {"objective": "rf/lognorm(0.00,1.00)", "text_encoder": "minilm", "image_size": 16}
    if step is not None:
        recipe["steps_done"] = step
    return save_checkpoint(model, recipe, path)


# ------------------------------------------------------------------------------------------------------------
# Broker


def broker_options(var_dir: str | Path) -> dict:
    """The filesystem broker's folders under `var_dir`, exactly as evalsite.settings lays them out."""
    broker = Path(var_dir) / "broker"
    for sub in ("queue", "control", "processed"):
        (broker / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(broker / "queue"),
        "data_folder_out": str(broker / "queue"),
        "control_folder": str(broker / "control"),
        "processed_folder": str(broker / "processed"),
        "store_processed": False,
    }


def switch_broker(url: str, transport_options: dict) -> Callable[[], None]:
    """Send this process's tasks to `url` with `transport_options` from now on. Returns a function that
    restores the previous broker."""
    from evalsite.celery import app

    def switch(url, options):
        app.conf.broker_url, app.conf.broker_transport_options = url, options
        app._pool = None
        app.amqp._producer_pool = None

    previous = app.conf.broker_url, app.conf.broker_transport_options
    switch(url, transport_options)
    return lambda: switch(*previous)


def use_broker_folder(var_dir: str | Path) -> Callable[[], None]:
    """Send this process's tasks to the filesystem broker under `var_dir` (no-op with Redis/AMQP, whose test
    database or vhost CI already keeps apart). Returns a function that restores the previous broker."""
    from django.conf import settings

    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        return lambda: None
    return switch_broker(settings.CELERY_BROKER_URL, broker_options(var_dir))


def queued_messages(var_dir: str | Path) -> list[dict]:
    """Tasks waiting in the filesystem broker under `var_dir`: [{'task', 'id', 'args', 'queue'}], oldest first."""
    folder = Path(var_dir) / "broker" / "queue"
    out = []
    for path in sorted(folder.glob("*.msg")):
        message = json.loads(path.read_text())
        headers = message.get("headers", {})
        out.append(
            {
                "task": headers.get("task"),
                "id": headers.get("id"),
                "args": headers.get("argsrepr"),
                "queue": path.name.rsplit(".", 2)[-2],
            }
        )
    return out


# ------------------------------------------------------------------------------------------------------------
# Worker processes


def database_url() -> str:
    """A DATABASE_URL for the database this process is connected to (the test database under pytest)."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    if not db["ENGINE"].endswith(("postgresql", "postgis")):
        raise RuntimeError(f"no DATABASE_URL for engine {db['ENGINE']}")
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    host = db["HOST"] or "localhost"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{db['NAME']}"


class WorkerProcess:
    """`bin/process worker` with WORKER_QUEUES=`queues` and concurrency 1 (prefetch 1, prefork) in its own
    process group, sharing this process's database and broker URL; its EVALSITE_VAR_DIR is `var_dir` (where the
    filesystem broker's folders are: see use_broker_folder) and its media folder `media_root`. `process` may
    name another bin/process command (`gpu-worker`, named by WORKER_NAME in extra_env)."""

    def __init__(
        self,
        var_dir: str | Path,
        media_root: str | Path,
        log_file: str | Path,
        queues: str = "gpu,default",
        extra_env: dict | None = None,
        process: str = "worker",
    ):
        self.var_dir, self.media_root, self.log_file = Path(var_dir), Path(media_root), Path(log_file)
        self.queues, self.extra_env, self.process = queues, extra_env or {}, process
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict:
        from django.conf import settings

        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "evalsite.settings",
                "DATABASE_URL": database_url(),
                "EVALSITE_VAR_DIR": str(self.var_dir),
                "EVALSITE_MEDIA_ROOT": str(self.media_root),
                "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
                "WORKER_QUEUES": self.queues,
                "WORKER_CONCURRENCY": "1",
                "LOG_LEVEL": "INFO",
                "EVALSITE_DEVICE": "cpu",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "OMP_NUM_THREADS": "1",
                "EVALSITE_TORCH_THREADS": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> WorkerProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [os.path.join(REPO_ROOT, "bin", "process"), self.process],
                cwd=REPO_ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pause(self) -> None:
        """SIGSTOP the whole process group: its state can be read without it moving on (resume with SIGCONT)."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the whole process group (the main process and its pool child) at once."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not exit in time."""
        if self.proc is None or not self.alive():
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


def wait_for(condition, timeout: float, interval: float = 0.2, what: str = "condition", worker=None):
    """Poll `condition()` until it is truthy; fail with the worker's log when it never is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if worker is not None and not worker.alive():
            raise AssertionError(f"the worker exited while waiting for {what}:\n{worker.log()[-4000:]}")
        time.sleep(interval)
    tail = worker.log()[-4000:] if worker is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def wait_until_a_lock_waits(what: str, timeout: float = 3.0) -> None:
    """PostgreSQL: poll pg_locks on the test's own connection until some session waits for a lock (another
    thread queued behind this transaction's row lock); fail naming `what` when none does within `timeout`."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError(f"{what} never waited for the lock")


# --------------------------------------------------------------------------------------------- OCR

DEJAVU_SANS = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # Debian fonts-dejavu-core


def ocr_missing_reason() -> str:
    """Why the OCR tests cannot run here ("" when they can): Tesseract with its English model and the DejaVu
    font they render with. .ci/run installs both and sets EVALSITE_REQUIRE_OCR=1, so there a missing
    engine fails the tests instead of skipping them."""
    from analysis.typography import tesseract_available

    missing = []
    if not tesseract_available():
        missing.append("tesseract with its English model (apt-get install tesseract-ocr tesseract-ocr-eng)")
    if not DEJAVU_SANS.is_file():
        missing.append(f"the DejaVu font {DEJAVU_SANS} (apt-get install fonts-dejavu-core)")
    reason = "needs " + " and ".join(missing) if missing else ""
    if reason and os.environ.get("EVALSITE_REQUIRE_OCR") == "1":
        raise RuntimeError(f"EVALSITE_REQUIRE_OCR=1 but the OCR tests cannot run: {reason}")
    return reason


def render_text(text: str, size: int, colour="black", background="white", pad: int | None = None):
    """A PIL image of `text` in DejaVu Sans at `size` px, with `pad` px of background around it."""
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    font = ImageFont.truetype(str(DEJAVU_SANS), size)
    left, top, right, bottom = font.getbbox(text)
    pad = size // 2 if pad is None else pad
    image = PILImage.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), background)
    ImageDraw.Draw(image).text((pad - left, pad - top), text, font=font, fill=colour)
    return image
