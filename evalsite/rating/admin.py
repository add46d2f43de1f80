from django.contrib import admin

from evalsite.rating.models import Assignment, Campaign, GoldCheck, Rater, Vote


@admin.register(Rater)
class RaterAdmin(admin.ModelAdmin):
    list_display = ("user", "flagged", "flagged_reason", "created_at")
    list_filter = ("flagged",)


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ("name", "run", "votes_per_pair", "gold_rate", "is_open")
    filter_horizontal = ("raters",)
    readonly_fields = ("invite_token",)


@admin.register(GoldCheck)
class GoldCheckAdmin(admin.ModelAdmin):
    list_display = ("campaign", "prompt", "criterion", "description")
    raw_id_fields = ("prompt", "correct_image", "wrong_image")


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ("id", "campaign", "rater", "status", "expires_at")
    list_filter = ("status", "campaign")
    raw_id_fields = ("prompt", "image_left", "image_right", "gold")


@admin.register(Vote)
class VoteAdmin(admin.ModelAdmin):
    list_display = ("assignment", "criterion", "choice", "model_left", "model_right", "rater", "created_at")
    list_filter = ("criterion", "choice", "campaign", "is_gold")
    raw_id_fields = ("assignment",)
