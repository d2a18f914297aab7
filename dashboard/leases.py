"""How a worker gets a row's next step to itself: a lease on the row's due time, and a claim
counter that says which worker holds it.

A row is due when its due column (`next_poll_at`, `next_attempt_at`) has passed. A dispatcher
claims due rows by moving that column forward by the lease and bumping `claims`; the worker whose
message carries the latest claim may act, and every write it makes is bound to that claim. A lost
message or a dead worker only delays the step until the lease runs out.
"""

import json
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone


def claim_due(rows: QuerySet, due: str, lease: float, limit: int) -> list[tuple[int, int]]:
    """Lease up to `limit` of `rows` whose `due` time has passed; (pk, claim) pairs for `take`.

    PostgreSQL skips rows another dispatcher has locked; on SQLite the transaction takes the
    write lock up front (IMMEDIATE mode), and the claim counter check covers both.
    """
    now = timezone.now()
    lease_until = now + timedelta(seconds=lease)
    with transaction.atomic():
        candidates = (
            rows.filter(**{f"{due}__lte": now})
            .order_by(due)
            .select_for_update(skip_locked=True)
            .values_list("pk", "claims")[:limit]
        )
        claimed = []
        for pk, claim in list(candidates):
            if rows.filter(pk=pk, claims=claim).update(**{due: lease_until, "claims": claim + 1}):
                claimed.append((pk, claim + 1))
    return claimed


def take(rows: QuerySet, pk: int, claim: int, due: str, lease: float):
    """The row, if `claim` is still its latest, with its lease renewed for this worker (the
    message may have waited in a queue); None for a stale claim."""
    lease_until = timezone.now() + timedelta(seconds=lease)
    if not rows.filter(pk=pk, claims=claim).update(**{due: lease_until}):
        return None
    row = rows.get(pk=pk)
    row.claim = claim
    return row


def claim_batch(model, due: str, lease: float, limit: int, lookahead: float = 0.0) -> list:
    """Lease up to `limit` rows of `model` due within `lookahead` seconds, in one statement on
    PostgreSQL (two in SQLite's write transaction); the rows as instances, each with `claim`
    (its new claim) and `due_at` (when its step is due, which may be just ahead)."""
    now = timezone.now()
    table = model._meta.db_table
    column = model._meta.get_field(due).column
    names = ", ".join(f"p.{field.column}" for field in model._meta.concrete_fields)
    horizon = now + timedelta(seconds=lookahead)
    lease_until = now + timedelta(seconds=lease)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            rows = model.objects.raw(
                f"WITH due AS (SELECT id, {column} AS due_at FROM {table} "
                f"WHERE {column} <= %s ORDER BY {column} LIMIT %s FOR UPDATE SKIP LOCKED) "
                f"UPDATE {table} AS p SET {column} = %s, claims = p.claims + 1 "
                f"FROM due WHERE p.id = due.id RETURNING {names}, due.due_at",
                [horizon, limit, lease_until],
            )
            claimed = list(rows)
        else:
            # SQLite's RETURNING cannot name the FROM table: read the due times first (the
            # transaction already holds the write lock, so nobody else claims them meanwhile).
            due_at = dict(
                model.objects.filter(**{f"{due}__lte": horizon})
                .order_by(due)
                .values_list("pk", due)[:limit]
            )
            if not due_at:
                return []
            marks = ", ".join(["%s"] * len(due_at))
            rows = model.objects.raw(
                f"UPDATE {table} AS p SET {column} = %s, claims = p.claims + 1 "
                f"WHERE p.id IN ({marks}) RETURNING {names.replace('p.', '')}",
                [connection.ops.adapt_datetimefield_value(lease_until), *due_at],
            )
            claimed = list(rows)
            for row in claimed:
                row.due_at = due_at[row.pk]
    for row in claimed:
        row.claim = row.claims
    return claimed


def update_from_values(
    model,
    columns: dict[str, str],
    sets: list[str],
    where: str,
    rows: list[tuple],
    returning: str | None = None,
) -> int | list:
    """One UPDATE for many rows: `columns` names the VALUES columns (name -> SQL type on
    PostgreSQL), `sets` and `where` are SQL over `p` (the row) and `v` (its values). Each row's
    values are already adapted for the database. Returns how many rows changed, or the
    `returning` expression of each."""
    if not rows:
        return [] if returning else 0
    table = model._meta.db_table
    cast = connection.vendor == "postgresql"
    names = ", ".join(columns)
    if cast:
        # The rows travel as one JSON document: the statement's text is the same whatever the
        # number of rows, so the server parses it once, and the driver sends one string that
        # json.dumps (C) wrote, not thousands of values it would quote one by one in Python.
        typed = ", ".join(
            f"CAST(r->>{n} AS {kind}) AS {name}" for n, (name, kind) in enumerate(columns.items())
        )
        source = f"v AS (SELECT {typed} FROM json_array_elements(%s::json) AS r)"
        params = [json.dumps(rows, default=datetime.isoformat)]
    else:
        marks = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows))
        source = f"v({names}) AS (VALUES {marks})"
        params = [value for row in rows for value in row]
    sql = f"WITH {source} UPDATE {table} AS p SET {', '.join(sets)} FROM v WHERE {where}"
    if returning:
        # SQLite's RETURNING names the updated table's columns bare, PostgreSQL's by alias.
        sql += f" RETURNING {returning if cast else returning.removeprefix('p.')}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()] if returning else cursor.rowcount
