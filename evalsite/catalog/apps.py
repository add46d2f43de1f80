from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "evalsite.catalog"
    label = "catalog"
