import logging

from django.contrib import admin
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from evalsite.rating import engine, quality
from evalsite.rating.models import (
    Assignment,
    Campaign,
    CampaignJoin,
    GoldCheck,
    ImagePair,
    PersonalInvite,
    Rater,
    RaterReview,
    RaterStats,
    Vote,
)


@admin.register(Rater)
class RaterAdmin(admin.ModelAdmin):
    list_display = ("user", "flagged", "flagged_reason", "instructions_seen_at", "created_at")
    list_filter = ("flagged",)
    search_fields = ("user__username",)


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ("name", "run", "votes_per_pair", "gold_rate", "pair_policy", "is_open", "raters_page")
    filter_horizontal = ("raters",)
    readonly_fields = ("invite_token", "invite_link", "paired_image_count")
    actions = ["prepare", "recompute_quality"]

    def save_model(self, request, obj, form, change):
        """Pair the run's images in the background (large runs take seconds); the engine would otherwise
        do it on the first rater's request."""
        super().save_model(request, obj, form, change)
        transaction.on_commit(lambda: _enqueue_prepare(obj.pk))

    @admin.display(description="Invite link")
    def invite_link(self, obj):
        return reverse("rating:join", args=[obj.invite_token]) if obj.pk else "-"

    @admin.display(description="Raters")
    def raters_page(self, obj):
        return format_html('<a href="{}">quality</a>', reverse("rating:staff-campaign-raters", args=[obj.pk]))

    @admin.action(description="Pair finished images and top up gold checks")
    def prepare(self, request, queryset):
        for campaign in queryset:
            made = engine.prepare_campaign(campaign)
            self.message_user(
                request, f"{campaign}: {made['new_pairs']} new pairs, {made['new_gold_checks']} new gold checks"
            )

    @admin.action(description="Recompute rater quality and flags")
    def recompute_quality(self, request, queryset):
        for campaign in queryset:
            stats = quality.update_rater_quality(campaign)
            self.message_user(request, f"{campaign}: {len(stats)} raters, {sum(s.flagged for s in stats)} flagged")


@admin.register(GoldCheck)
class GoldCheckAdmin(admin.ModelAdmin):
    list_display = ("campaign", "prompt", "criterion", "description")
    raw_id_fields = ("prompt", "correct_image", "wrong_image")


@admin.register(ImagePair)
class ImagePairAdmin(admin.ModelAdmin):
    list_display = ("campaign", "pair_key", "model_a", "model_b", "assigned", "answered")
    list_filter = ("campaign",)
    raw_id_fields = ("prompt", "image_a", "image_b")
    readonly_fields = ("assigned", "answered")


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("id", "campaign", "rater", "status", "expires_at")
    list_filter = ("status", "campaign")
    raw_id_fields = ("prompt", "image_left", "image_right", "gold", "image_pair")


@admin.register(Vote)
class VoteAdmin(admin.ModelAdmin):
    list_display = ("assignment", "criterion", "choice", "model_left", "model_right", "rater", "created_at")
    list_filter = ("criterion", "choice", "campaign", "is_gold")
    raw_id_fields = ("assignment",)


@admin.register(RaterStats)
class RaterStatsAdmin(admin.ModelAdmin):
    list_display = (
        "rater",
        "campaign",
        "pairs_answered",
        "gold_correct",
        "gold_answered",
        "gold_accuracy",
        "median_seconds_per_pair",
        "left_share",
        "flagged",
    )
    list_filter = ("campaign", "flagged")


@admin.register(RaterReview)
class RaterReviewAdmin(admin.ModelAdmin):
    """Raters the suspicion checks held: accept to count their votes, reject to leave them out for good."""

    list_display = ("rater", "campaign", "state", "reasons", "detected_at", "reviewed_by", "reviewed_at")
    list_filter = ("state", "campaign")
    readonly_fields = ("detected_at", "reviewed_by", "reviewed_at")
    actions = ["accept", "reject"]

    def _review(self, request, queryset, state: str) -> None:
        count = queryset.update(state=state, reviewed_by=request.user, reviewed_at=timezone.now())
        self.message_user(request, f"{count} raters marked {state}.")

    @admin.action(description="Accept: count their votes")
    def accept(self, request, queryset):
        self._review(request, queryset, RaterReview.State.ACCEPTED)

    @admin.action(description="Reject: leave their votes out")
    def reject(self, request, queryset):
        self._review(request, queryset, RaterReview.State.REJECTED)


@admin.register(PersonalInvite)
class PersonalInviteAdmin(admin.ModelAdmin):
    list_display = ("label", "campaign", "token", "used_by", "used_at", "created_at")
    list_filter = ("campaign",)
    readonly_fields = ("token", "used_by", "used_at")


@admin.register(CampaignJoin)
class CampaignJoinAdmin(admin.ModelAdmin):
    list_display = ("rater", "campaign", "link", "joined_at")
    list_filter = ("campaign", "link")


def _enqueue_prepare(campaign_id: int) -> None:
    from evalsite.rating.tasks import prepare_campaign

    try:
        prepare_campaign.delay(campaign_id)
    except Exception:  # noqa: BLE001 - a broker outage must not fail the save; the engine pairs lazily
        logging.getLogger(__name__).warning("could not enqueue rating.prepare_campaign(%s)", campaign_id, exc_info=True)
