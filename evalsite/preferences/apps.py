from django.apps import AppConfig


class PreferencesConfig(AppConfig):
    name = "evalsite.preferences"
    label = "preferences"
    verbose_name = "Preference data imported from elsewhere"
