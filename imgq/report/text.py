"""Stats and diffs as plain text tables for the terminal."""

from __future__ import annotations

from imgq.report.diff import DiffRow, DiffSummary
from imgq.report.output import format_table
from imgq.report.stats import Stats


def stats_text(stats: Stats) -> str:
    """The figures of :class:`Stats` as a few aligned tables."""
    scope = f"model version {stats.model_version_id}"
    if stats.job_id is not None:
        scope += f", job {stats.job_id}"
    confidence = stats.confidence
    overview: list[tuple[str, object]] = [
        ("predictions", stats.total),
        ("with a true label", stats.labelled),
        ("right", stats.correct),
        ("accuracy", _share(stats.accuracy)),
        (f"confidence below {confidence.threshold}", confidence.below_threshold),
        ("confidence min", confidence.minimum),
        ("confidence mean", confidence.mean),
    ]
    overview.extend(
        (f"confidence {name}", value) for name, value in confidence.quantiles.items()
    )
    overview.append(("confidence max", confidence.maximum))
    classes = [
        (
            entry.label,
            entry.predicted,
            entry.actual,
            entry.correct,
            _share(entry.precision),
            _share(entry.recall),
        )
        for entry in stats.classes
    ]
    failures = sorted(stats.failures.items()) or [("none", 0)]
    return "\n".join(
        [
            f"{scope}\n",
            format_table(("figure", "value"), overview),
            format_table(
                ("class", "predicted", "truly", "right", "precision", "recall"), classes
            ),
            format_table(("failure kind", "count"), failures),
        ]
    )


def diff_text(summary: DiffSummary, changes: list[DiffRow]) -> str:
    """The diff's counts, its label pairs and the listed changed images."""
    scope = f"A = model version {summary.model_a}, B = model version {summary.model_b}"
    if summary.job is not None:
        scope += f", job {summary.job}"
    share = summary.changed / summary.compared if summary.compared else None
    lines = [
        f"{scope}\n",
        format_table(
            ("answered by A", "by B", "by both", "changed", "share changed"),
            [
                (
                    summary.in_a,
                    summary.in_b,
                    summary.compared,
                    summary.changed,
                    _share(share),
                )
            ],
        ),
    ]
    shares = summary.low_shares()
    if shares is not None:
        lines.append(
            format_table(
                (f"confidence below {summary.low_confidence}", "A", "B"),
                [
                    ("images", summary.low_a, summary.low_b),
                    ("share of those compared", _share(shares[0]), _share(shares[1])),
                ],
            )
        )
    if summary.changed:
        lines.append(format_table(("A", "B", "images"), summary.changed_pairs()))
    if changes:
        lines.append(
            format_table(
                DiffRow.columns, [tuple(row.as_dict().values()) for row in changes]
            )
        )
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
