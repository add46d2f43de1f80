from django.contrib import admin

from evalsite.catalog.models import ImageModel, Prompt, PromptSet


@admin.register(ImageModel)
class ImageModelAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "source", "is_active", "created_at")
    list_filter = ("kind", "is_active")
    search_fields = ("name", "source")


class PromptInline(admin.TabularInline):
    model = Prompt
    extra = 0
    fields = (
        "position",
        "text",
        "category",
        "challenge",
        "detected_needs_text",
        "needs_text_override",
        "rendered_text",
    )
    readonly_fields = ("detected_needs_text",)
    show_change_link = True


@admin.register(PromptSet)
class PromptSetAdmin(admin.ModelAdmin):
    list_display = ("name", "source_file", "created_at")
    search_fields = ("name",)


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("text", "prompt_set", "category", "challenge", "detected_needs_text", "needs_text_override")
    list_filter = ("prompt_set", "category", "challenge", "detected_needs_text")
    list_editable = ("needs_text_override",)
    search_fields = ("text",)
