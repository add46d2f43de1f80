"""Votes, images and results as CSV, Parquet or JSON files (the same bytes for the page and the API)."""

from __future__ import annotations

import io
import json

import pandas as pd
from django.http import HttpResponse

from evalsite.dashboards.data import images_frame, votes_frame
from evalsite.dashboards.results import results_table
from evalsite.rating.models import Campaign

FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "json": "application/json",
}
TABLES = ("votes", "images", "results")


def export_frame(campaign: Campaign, table: str) -> pd.DataFrame:
    if table == "votes":
        return votes_frame(campaign)
    if table == "images":
        frame = images_frame(campaign)
        # nested settings as JSON text: one flat column type in every format
        frame["sampler_settings"] = frame["sampler_settings"].map(lambda s: json.dumps(s, sort_keys=True))
        return frame
    if table == "results":
        return results_table(campaign)
    raise ValueError(f"unknown export table {table!r}; choose one of {', '.join(TABLES)}")


def to_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    """Serialise a frame; datetimes become ISO 8601 text in CSV and JSON, timestamps in Parquet."""
    if fmt == "csv":
        return frame.to_csv(index=False).encode("utf-8")
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False, engine="pyarrow")
        return buffer.getvalue()
    if fmt == "json":
        return frame.to_json(orient="records", date_format="iso", force_ascii=False).encode("utf-8")
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def filename(campaign: Campaign, table: str, fmt: str) -> str:
    return f"campaign-{campaign.pk}-{table}.{fmt}"


def download(frame: pd.DataFrame, fmt: str, filename: str) -> HttpResponse:
    """`frame` as a file the browser saves under `filename`."""
    response = HttpResponse(to_bytes(frame, fmt), content_type=FORMATS[fmt])
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
