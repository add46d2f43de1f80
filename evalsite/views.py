from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render

from evalsite.catalog.models import ImageModel, PromptSet
from evalsite.runs.models import ComparisonRun


@login_required
def home(request):
    context = {}
    if request.user.is_staff:
        context.update(
            prompt_sets=PromptSet.objects.all()[:20],
            image_models=ImageModel.objects.all()[:50],
            runs=ComparisonRun.objects.all()[:20],
        )
    rater = getattr(request.user, "rater", None)
    context["campaigns"] = rater.campaigns.filter(is_open=True) if rater else []
    return render(request, "home.html", context)


def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
