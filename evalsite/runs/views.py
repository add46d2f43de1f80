"""Researcher pages for comparison runs (staff only): list, new run, progress per model, retry, previews."""

from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from evalsite.inputs import numeric_id
from evalsite.runs import services
from evalsite.runs.forms import ImportForm, RunForm
from evalsite.runs.imports import ManifestError, import_zip
from evalsite.runs.models import ComparisonRun, GenerationJob, Image

PREVIEWS_PER_MODEL = 8


def staff_required(view):
    """Anonymous users go to the login page; logged-in users without staff rights get 403."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise PermissionDenied("Comparison runs are for researchers (staff accounts).")
        return view(request, *args, **kwargs)

    return wrapper


@require_GET
@staff_required
def run_list(request):
    runs = list(
        ComparisonRun.objects.select_related("prompt_set", "created_by").annotate(
            n_models=Count("image_models", distinct=True)
        )[:100]
    )
    for run in runs:
        run.counts = run.progress()
    return render(request, "runs/run_list.html", {"runs": runs})


@require_http_methods(["GET", "POST"])
@staff_required
def run_new(request):
    form = RunForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            planned = services.create_run(
                name=data["name"],
                prompt_set=data["prompt_set"],
                image_models=list(data["image_models"]),
                prompts=data.get("prompts") or None,
                seeds=form.seeds(),
                sampler_overrides=form.overrides(),
                batch_size=data.get("batch_size"),
                created_by=request.user,
            )
        except services.RunError as e:
            form.add_error(None, str(e))
        else:
            messages.success(
                request,
                f"Run created: {planned.new_images} images to generate in "
                f"{len(planned.job_ids)} jobs, {planned.reused_images} reused.",
            )
            return redirect("runs:detail", run_id=planned.run.pk)
    return render(request, "runs/run_new.html", {"form": form})


@require_http_methods(["GET", "POST"])
@staff_required
def run_import(request):
    """Upload a .zip of outside images into a run; a broken manifest lists its problems and stores nothing."""
    form = ImportForm(request.POST or None, request.FILES or None)
    problems: list[tuple[int, str]] = []
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        prompt_set = data.get("prompt_set")
        try:
            result = import_zip(
                data["archive"],
                data["run_name"],
                prompt_set_name=prompt_set.name if prompt_set else None,
                created_by=request.user,
                image_size=data.get("image_size"),
                image_fit=data.get("image_fit") or None,
            )
        except ManifestError as e:
            problems = e.errors
        else:
            created = f" New external models: {', '.join(result.models_created)}." if result.models_created else ""
            messages.success(
                request,
                f"Imported {result.imported} images ({result.reused} reused from other runs, "
                f"{result.unchanged} unchanged).{created}",
            )
            return redirect("runs:detail", run_id=result.run.pk)
    status = 400 if problems else 200
    return render(request, "runs/run_import.html", {"form": form, "problems": problems}, status=status)


def _progress_payload(run: ComparisonRun) -> dict:
    return {
        "id": run.pk,
        "status": run.status,
        "progress": run.progress(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "models": services.progress_by_model(run),
    }


@require_GET
@staff_required
def run_detail(request, run_id: int):
    run = get_object_or_404(ComparisonRun.objects.select_related("prompt_set", "created_by"), pk=run_id)
    payload = _progress_payload(run)
    previews = {}
    for row in payload["models"]:
        previews[row["model_id"]] = list(
            run.all_images()
            .filter(model_id=row["model_id"], status=Image.Status.DONE)
            .select_related("prompt")
            .order_by("prompt__position", "seed")[:PREVIEWS_PER_MODEL]
        )
    for row in payload["models"]:
        row["previews"] = previews[row["model_id"]]
    return render(
        request,
        "runs/run_detail.html",
        {
            "run": run,
            "payload": payload,
            "models": payload["models"],
            "prompt_count": run.selected_prompts().count(),
            "jobs_open": run.jobs.filter(status__in=services.OPEN_JOB_STATES).count(),
        },
    )


@require_GET
@staff_required
def run_progress(request, run_id: int):
    run = get_object_or_404(ComparisonRun, pk=run_id)
    return JsonResponse(_progress_payload(run))


@require_POST
@staff_required
def run_retry(request, run_id: int):
    run = get_object_or_404(ComparisonRun, pk=run_id)
    job_id = request.POST.get("job")
    if job_id is not None:
        job = numeric_id(job_id)
        if job is None or not GenerationJob.objects.filter(pk=job).exists():
            raise Http404("No such job.")
        count = services.retry_failed(run, job_ids=[job])
    else:
        count = services.retry_failed(run)
    if count:
        messages.success(request, f"Sent {count} failed job{'s' if count != 1 else ''} again.")
    else:
        messages.info(request, "Nothing to retry: no failed jobs.")
    return redirect("runs:detail", run_id=run.pk)


def _opened(stored, what: str):
    """A stored file opened for reading, or a 404 that says it is missing."""
    try:
        return stored.open("rb")
    except (FileNotFoundError, OSError):
        raise Http404(f"The {what} file is missing.") from None


@require_GET
@staff_required
def image_file(request, token: str):
    """A generated image for researchers' previews (raters get theirs through the rating app)."""
    image = Image.objects.filter(token=token, status=Image.Status.DONE).exclude(file="").first()
    if image is None:
        raise Http404("No such image.")
    response = FileResponse(_opened(image.file, "image"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
@staff_required
def asset_file(request, token: str):
    """A text-to-3D image's asset file (generation.threed.load_asset reads it), for researchers only."""
    image = Image.objects.filter(token=token, status=Image.Status.DONE).exclude(asset="").first()
    if image is None:
        raise Http404("No such asset.")
    handle = _opened(image.asset, "asset")
    name = f"{image.model.name}-{image.prompt_id}-{image.seed}.safetensors".replace(" ", "_").replace("/", "_")
    return FileResponse(handle, content_type="application/octet-stream", as_attachment=True, filename=name)


TURN_FRAME_MS = 450  # as the rater page turns a turntable


@require_GET
@staff_required
def turntable_animation(request, token: str):
    """A text-to-3D image's animated preview: its turntable's views as the frames of a looping GIF, made from
    the stored turntable on request (nothing else is stored). 404 for a picture that is no turntable."""
    import io

    from PIL import Image as PILImage

    from generation.contract import TURNTABLE_VIEWS

    image = Image.objects.filter(token=token, status=Image.Status.DONE).exclude(file="").first()
    if image is None or image.width != TURNTABLE_VIEWS * (image.height or 0):
        raise Http404("No such turntable.")
    try:
        with image.file.open("rb") as stored:
            strip = PILImage.open(stored).convert("RGB")
    except (FileNotFoundError, OSError):
        raise Http404("The image file is missing.") from None
    side = strip.height
    frames = [strip.crop((i * side, 0, (i + 1) * side, side)) for i in range(TURNTABLE_VIEWS)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=TURN_FRAME_MS, loop=0)
    response = HttpResponse(out.getvalue(), content_type="image/gif")
    response["Cache-Control"] = "private, max-age=3600"
    return response
