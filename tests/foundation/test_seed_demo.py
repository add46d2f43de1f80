import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from evalsite.catalog.models import PromptSet


@pytest.mark.django_db
def test_seed_demo_creates_users_and_prompt_sets_and_is_idempotent(media_root):
    call_command("seed_demo")
    call_command("seed_demo")
    users = get_user_model().objects
    assert users.get(username="admin").is_staff
    assert users.get(username="rater").rater is not None
    parti = PromptSet.objects.get(name="PartiPrompts")
    assert parti.prompts.count() == 1632
    demo = PromptSet.objects.get(name="Demo shapes, positions and words")
    assert demo.prompts.count() > 10
    assert demo.prompts.filter(note__contains="held-out").exists()
    assert any(p.needs_text and p.rendered_text for p in demo.prompts.all())
