"""Hand-written statements on the vote path, read back as model instances.

The rater API's hottest statements are written as SQL (one narrow statement each) because the ORM's version of
them cost several times as much in compiling the query, planning its joins and building model instances as the
database spent running it (bench/vote_path.py). These helpers turn such a row back into what the ORM would have
given: each column through its field's database converters (SQLite returns datetimes as text, UUIDs as hex,
booleans as integers, JSON as text), and instances with exactly the columns read loaded (any other field loads
on first use, as with `.only()`).
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection
from django.db.models import BooleanField, ExpressionWrapper, Field, Model, Value
from django.db.models.sql import Query

from generation import contract

RUN_IS_3D_PARAMS = {"kind_3d": contract.TEXT_TO_3D}


def _as_column(field: Field):
    if getattr(field, "model", None) is None:  # an unbound field: only its type matters
        return ExpressionWrapper(Value(None), output_field=field)
    return field.get_col(field.model._meta.db_table)


def statement_cursor():
    """A cursor for a hand-written statement that runs on every request: on PostgreSQL one whose statements the
    server keeps prepared per connection (evalsite.dbbackends.postgresql: planned once, not per request), else
    Django's own."""
    prepared = getattr(connection, "prepared_cursor", None)
    return prepared() if prepared is not None else connection.cursor()


_CONVERTERS: dict[tuple, list] = {}


def _converters(sql: str, selected: Sequence[tuple[str, Field]]) -> list:
    """[(column index, converters, expression)] for this statement's columns on this kind of database (cached: the
    ORM works them out per query, at ~40 columns a noticeable share of a request)."""
    key = (connection.alias, connection.vendor, sql)
    found = _CONVERTERS.get(key)
    if found is None:
        compiler = Query(None).get_compiler(connection=connection)
        expressions = [_as_column(field) for _, field in selected]
        found = [(i, convs, expression) for i, (convs, expression) in compiler.get_converters(expressions).items()]
        _CONVERTERS[key] = found
    return found


def select_list(selected: Sequence[tuple[str, Field]]) -> str:
    """ "SELECT a, b, ..." of the (SQL, field) columns, for a statement that `fetch_row` reads back."""
    return "SELECT " + ", ".join(sql for sql, _ in selected)


def fetch_row(sql: str, params, selected: Sequence[tuple[str, Field]]) -> list | None:
    """Run `sql` (one row at most, its columns `selected`: (SQL, field) as in `select_list`) and return that row
    with each column converted as its field reads it, or None."""
    with statement_cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    row = list(row)
    for i, convs, expression in _converters(sql, selected):
        value = row[i]
        for convert in convs:
            value = convert(value, expression, connection)
        row[i] = value
    return row


def loaded(model: type[Model], **values) -> Model:
    """An instance of `model` with these fields (by attname) loaded and the others deferred."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(connection.alias, names, [values[name] for name in names])


def columns(model: type[Model], alias: str) -> list[tuple[str, Field]]:
    """(SQL, field) for every concrete column of `model` in a statement that names its table `alias`."""
    return [(f'{alias}."{field.column}"', field) for field in model._meta.concrete_fields]


def instance(model: type[Model], values: Sequence) -> Model:
    """A fully loaded instance from the values of `columns(model, ...)`, in that order."""
    return model.from_db(connection.alias, [f.attname for f in model._meta.concrete_fields], list(values))


def instances(row: Sequence, *models: type[Model]) -> tuple[list[Model], list]:
    """The row of a statement whose columns start with `columns(m, ...)` for each of `models`, in that order: (one
    fully loaded instance per model, the values of the columns after them)."""
    made, start = [], 0
    for model in models:
        end = start + len(model._meta.concrete_fields)
        made.append(instance(model, row[start:end]))
        start = end
    return made, list(row[start:])


def run_is_3d(run_id_sql: str) -> tuple[str, Field]:
    """(SQL, field) of ComparisonRun.is_3d for the run whose id is `run_id_sql`; its parameter is %(kind_3d)s, which
    `RUN_IS_3D_PARAMS` gives."""
    from evalsite.catalog.models import ImageModel
    from evalsite.runs.models import ComparisonRun

    through = ComparisonRun.image_models.through._meta.db_table
    sql = (
        f"EXISTS (SELECT 1 FROM {through} m JOIN {ImageModel._meta.db_table} k ON k.id = m.imagemodel_id "
        f"WHERE m.comparisonrun_id = {run_id_sql} AND k.kind = %(kind_3d)s)"
    )
    return sql, BooleanField()
