"""Expire open assignments past their expiry (also the Celery task rating.expire_assignments)."""

from django.core.management.base import BaseCommand

from evalsite.rating import engine


class Command(BaseCommand):
    help = "Mark open assignments past their expiry as expired and free their image pairs."

    def handle(self, **options):
        self.stdout.write(f"{engine.expire_assignments()} assignments expired")
