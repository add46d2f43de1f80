"""Number formats of the dashboards: one place, so pages, tests and exports agree."""

from __future__ import annotations

import math

from django import template

register = template.Library()


def _number(value):
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@register.filter
def score(value) -> str:
    """Bradley-Terry score on the Elo scale, one decimal: 1043.2."""
    number = _number(value)
    return "–" if number is None else f"{number:.1f}"


@register.filter
def pct(value, digits: int = 0) -> str:
    """A share as a percentage: 0.634 -> 63%."""
    number = _number(value)
    return "–" if number is None else f"{100 * number:.{int(digits)}f}%"


@register.filter
def num(value, digits: int = 2) -> str:
    """A plain number with `digits` decimals; – when missing."""
    number = _number(value)
    return "–" if number is None else f"{number:.{int(digits)}f}"


@register.filter
def votes(value) -> str:
    """A vote count with thousands separators; "unknown" when missing."""
    number = _number(value)
    return "unknown" if number is None else f"{int(number):,}"


@register.filter
def moment(value) -> str:
    """An ISO timestamp (as the shared cache keeps it) in the site's time zone, to the second:
    2026-12-04 13:10:05 UTC; – when missing or unreadable."""
    from datetime import datetime

    from django.utils import timezone

    if not value:
        return "–"
    try:
        when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return "–"
    if timezone.is_naive(when):
        when = timezone.make_aware(when, timezone.get_default_timezone())
    local = timezone.localtime(when)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"
