"""Reading a gateway's /metrics: the Prometheus text format parsed (prometheus_client.parser) into samples, and
the arithmetic Prometheus itself does on them: counter increases across resets, rates, histogram quantiles.

Everything here is a pure function of the text and the times of the scrapes, so the console's figures can be
checked against a gateway's own /metrics without a browser (tests/unit/test_console_figures.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = Mapping[str, str]


class MetricsFormatError(ValueError):
    """The text is not the Prometheus exposition format."""


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Labels
    value: float

    def matches(self, match: Labels) -> bool:
        return all(self.labels.get(k) == v for k, v in match.items())


class Samples:
    """The samples of one scrape, by sample name (`yrdx_messages_total`, `yrdx_end_to_end_seconds_bucket`)."""

    def __init__(self, samples: Iterable[Sample] = ()) -> None:
        self._by_name: dict[str, list[Sample]] = {}
        for s in samples:
            self._by_name.setdefault(s.name, []).append(s)

    def __iter__(self) -> Iterator[Sample]:
        for samples in self._by_name.values():
            yield from samples

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def select(self, name: str, **match: str) -> list[Sample]:
        """The samples of that name whose labels include `match`."""
        return [s for s in self._by_name.get(name, ()) if s.matches(match)]

    def value(self, name: str, **match: str) -> float | None:
        """The sum of the matching samples; None when there is none (the series does not exist yet)."""
        found = self.select(name, **match)
        return math.fsum(s.value for s in found) if found else None

    def total(self, name: str, **match: str) -> float:
        """As `value`, 0 when there is none: an unlabelled child of a counter is only exposed once it was used."""
        return self.value(name, **match) or 0.0

    def buckets(self, name: str, keep: Callable[[Sample], bool] | None = None, **match: str
                ) -> list[tuple[float, float]]:
        """The cumulative buckets `(le, count)` of a histogram, summed by `le` over the series that match (and
        that `keep` keeps)."""
        sums: dict[float, float] = {}
        for s in self.select(f"{name}_bucket", **match):
            if keep is not None and not keep(s):
                continue
            le = _float(s.labels.get("le", ""))
            if le is not None:
                sums[le] = sums.get(le, 0.0) + s.value
        return sorted(sums.items())


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_metrics(text: str) -> Samples:
    """The samples of a /metrics text; MetricsFormatError when it does not parse."""
    try:
        return Samples(Sample(s.name, dict(s.labels), float(s.value))
                       for family in text_string_to_metric_families(text) for s in family.samples)
    except (ValueError, TypeError, IndexError, KeyError) as e:  # the parser's ways of saying "not this format"
        raise MetricsFormatError(f"not the Prometheus text format: {e}") from e


def increase(values: Sequence[float]) -> float:
    """How much a counter grew over successive readings, as Prometheus counts it: a reading below the one before
    is a reset (the process restarted), after which the counter grew from zero to that reading."""
    grown = 0.0
    for before, after in zip(values, values[1:], strict=False):
        grown += after - before if after >= before else after
    return grown


def rate(points: Sequence[tuple[float, float]]) -> float | None:
    """Per-second rate of a counter read at `points` = [(time, value), ...] (oldest first); None with fewer than
    two readings or no time between them."""
    if len(points) < 2:
        return None
    span = points[-1][0] - points[0][0]
    if span <= 0:
        return None
    return increase([v for _, v in points]) / span


def bucket_increase(older: Sequence[tuple[float, float]], newer: Sequence[tuple[float, float]]
                    ) -> list[tuple[float, float]]:
    """The observations of a histogram between two scrapes, per cumulative bucket. A bucket that went down is a
    reset: the newer counts are then taken whole (a series that is new since `older` counts from zero)."""
    before = dict(older)
    if any(count < before.get(le, 0.0) for le, count in newer):
        return list(newer)
    return [(le, count - before.get(le, 0.0)) for le, count in newer]


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile (0..1) of cumulative buckets [(le, count), ...], interpolated linearly within its bucket as
    PromQL's histogram_quantile does: None with no observations; the highest finite bound when the quantile lies
    in the +Inf bucket; the lowest bucket's interpolation starts at 0."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not between 0 and 1")
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None  # a histogram always ends with +Inf; a partial one cannot be read
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    for i, (le, count) in enumerate(ordered):
        if count >= rank:
            if math.isinf(le):
                return ordered[-2][0]
            lower, below = (0.0, 0.0) if i == 0 else ordered[i - 1]
            if i == 0 and le <= 0:
                return le
            inside = count - below
            return le if inside <= 0 else lower + (le - lower) * (rank - below) / inside
    return ordered[-2][0]
