from django.contrib import admin

from evalsite.preferences.models import PreferenceSet


@admin.register(PreferenceSet)
class PreferenceSetAdmin(admin.ModelAdmin):
    list_display = ("name", "source", "filename", "n_votes", "imported_at", "imported_by")
    readonly_fields = ("source", "filename", "sha256", "n_votes", "imported_at", "imported_by")
    search_fields = ("name", "filename", "description")
