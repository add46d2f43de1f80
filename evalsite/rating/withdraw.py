"""Taking an image out of every campaign when its stored file turns out to be missing or unreadable.

Found when a rater's page asks for the picture (rating.views.assignment_image): the image is marked failed with
the reason (the run page shows it, and regenerating the run makes it again), and in every campaign

  - open assignments that show it are expired, so an answer to a pair nobody could see is refused (410) and the
    rater's page moves on to another pair;
  - image pairs with it that have no answer yet are deleted, and those with answers stop taking new ones
    (`assigned` raised to the campaign's target), so the engine never hands it out again; the answers already
    given stay counted: they were given while the image could be seen;
  - gold checks with it stay (answered ones keep their history), but the engine hands out only gold checks of
    two finished images.

An assignment handed out while its image was being withdrawn (the page preloads its next pair while it asks for
the images of this one, so the two requests overlap) can commit after the withdrawal's expiry ran and stay open;
its page would ask for the next pair and be given the same one again, for ever. `expire_if_withdrawn` expires
such an assignment when its page asks for the image.

When the image is made again, `engine.prepare_campaign` pairs it anew (ensure_prepared notices the change in the
number of finished images).
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Greatest

from evalsite.rating.models import Assignment, ImagePair
from evalsite.runs.models import Image

log = logging.getLogger(__name__)


def withdraw_image(image: Image, reason: str) -> bool:
    """Take `image` out of every campaign (see the module docstring). Returns False when another request did so
    first (or the image is not a finished one), True when this call did."""
    with transaction.atomic():
        marked = Image.objects.filter(pk=image.pk, status=Image.Status.DONE).update(
            status=Image.Status.FAILED, error=f"withdrawn from rating: {reason}"
        )
        if not marked:
            return False
        shows = Q(image_left=image) | Q(image_right=image)
        expired = Assignment.objects.filter(shows, status=Assignment.Status.OPEN).update(
            status=Assignment.Status.EXPIRED
        )
        pairs = ImagePair.objects.filter(Q(image_a=image) | Q(image_b=image))
        deleted, _ = pairs.filter(answered=0).delete()
        for pair in pairs.select_related("campaign"):
            ImagePair.objects.filter(pk=pair.pk).update(assigned=Greatest("answered", pair.campaign.votes_per_pair))
    log.error("image %s withdrawn from rating: %s (%d open assignments expired, %d unanswered pairs removed)",
              image.pk, reason, expired, deleted)  # fmt: skip
    return True


def expire_if_withdrawn(assignment: Assignment, image: Image) -> None:
    """The page of `assignment` asked for `image`, which is no longer a finished image: expire the assignment if
    it is still open (see the module docstring), so the page's next request for a pair moves on."""
    if image.status != Image.Status.DONE:
        Assignment.objects.filter(pk=assignment.pk, status=Assignment.Status.OPEN).update(
            status=Assignment.Status.EXPIRED
        )
