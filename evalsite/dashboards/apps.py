from django.apps import AppConfig


class DashboardsConfig(AppConfig):
    name = "evalsite.dashboards"
    label = "dashboards"
