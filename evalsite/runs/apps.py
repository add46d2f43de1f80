from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "evalsite.runs"
    label = "runs"
