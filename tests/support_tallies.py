"""Check the tallies against the rows they count: rebuilt from scratch, equal."""

from __future__ import annotations

from typing import Any, cast

import pytest
import sqlalchemy as sa

from imgq.db import tallies
from imgq.db.engine import get_engine
from imgq.db.schema import (
    ConfidenceTally,
    JobConfidenceTally,
    JobImage,
    JobLabelTally,
    LabelTally,
)

TALLIES = (LabelTally, ConfidenceTally, JobLabelTally, JobConfidenceTally)
Tallies = dict[str, dict[tuple[Any, ...], int]]


def read_tallies(connection: sa.Connection) -> tuple[Tallies, dict[Any, float]]:
    """Every non-zero count by table and key, and the summed confidences."""
    counts: Tallies = {}
    sums: dict[Any, float] = {}
    for model in TALLIES:
        table = cast(sa.Table, model.__table__)
        keys = [column for column in table.primary_key.columns]
        counts[table.name] = {}
        for row in connection.execute(sa.select(table).where(table.c.images != 0)):
            key = tuple(row._mapping[column] for column in keys)
            counts[table.name][key] = int(row.images)
            if "confidence_sum" in row._mapping:
                sums[(table.name, key)] = float(row.confidence_sum)
    counts["job_images.tallied"] = {
        (job, image): 1
        for job, image in connection.execute(
            sa.select(JobImage.job_id, JobImage.image_id).where(JobImage.tallied)
        )
    }
    return counts, sums


def assert_tallies_match_rows(url: str | None = None) -> Tallies:
    """The tallies as kept equal the tallies recounted; return the counts."""
    with get_engine(url).connect() as connection:
        kept, kept_sums = read_tallies(connection)
        # rebuilt inside a transaction that is rolled back: the database
        # keeps the tallies the writers made
        tallies.recount(connection)
        recounted, recounted_sums = read_tallies(connection)
        connection.rollback()
    assert kept == recounted
    assert kept_sums == pytest.approx(recounted_sums)
    return kept
