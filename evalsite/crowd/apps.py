from django.apps import AppConfig


class CrowdConfig(AppConfig):
    name = "evalsite.crowd"
    label = "crowd"
    verbose_name = "Simulated crowd"
