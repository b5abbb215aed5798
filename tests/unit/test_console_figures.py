"""The console's arithmetic (gateway/console/promtext.py, figures.py): Prometheus text parsed, counter increases
across resets, rates, histogram quantiles as PromQL computes them, and the snapshot of region cards and region
pairs built from scrapes of the gateways' own metrics (gateway.metrics.Metrics, the registry /metrics serves)."""

from __future__ import annotations

import math

import pytest
from prometheus_client import generate_latest

from gateway.console.figures import History, Readiness, Scrape, pair_figures, region_figures, snapshot
from gateway.console.promtext import (
    MetricsFormatError,
    bucket_increase,
    histogram_quantile,
    increase,
    parse_metrics,
    rate,
)
from gateway.metrics import Metrics

INF = math.inf


def text(m: Metrics) -> str:
    return generate_latest(m.registry).decode()


def test_parse_reads_counters_histograms_and_gauges_of_a_gateway() -> None:
    m = Metrics("SH", "0.1.0", "ES256")
    m.messages.labels("out", "JS", "license", "accepted").inc(3)
    m.messages.labels("out", "ZJ", "medical", "accepted").inc(2)
    m.end_to_end_seconds.labels("JS", "license").observe(0.02)
    m.consumer_lag.labels("0").set(7)
    s = parse_metrics(text(m))
    assert s.value("yrdx_messages_total", direction="out") == 5
    assert s.value("yrdx_messages_total", peer="JS") == 3
    assert s.value("yrdx_messages_total", peer="AH") is None  # no such series yet
    assert s.total("yrdx_messages_total", peer="AH") == 0
    assert s.value("yrdx_consumer_lag_messages", partition="0") == 7
    assert s.buckets("yrdx_end_to_end_seconds", peer="JS")[-1] == (INF, 1.0)
    assert s.value("yrdx_end_to_end_seconds_count") == 1
    assert "yrdx_build_info" in s.names()


def test_parse_refuses_what_is_not_the_text_format() -> None:
    with pytest.raises(MetricsFormatError):
        parse_metrics("yrdx_messages_total{direction=\"out\" 1\n")


def test_increase_counts_a_reset_as_prometheus_does() -> None:
    assert increase([5, 7, 10]) == 5
    assert increase([5, 7, 2, 4]) == 2 + 2 + 2  # 5->7, reset then 0->2, 2->4
    assert increase([3]) == 0
    assert rate([(0.0, 10.0), (2.0, 14.0), (4.0, 20.0)]) == 2.5
    assert rate([(0.0, 10.0)]) is None
    assert rate([(1.0, 1.0), (1.0, 5.0)]) is None


@pytest.mark.parametrize(("q", "want"), [
    (0.5, 0.05 + 0.05 * 3 / 4),  # rank 5 of 10 lies in (0.05, 0.1], which holds the 3rd to the 6th
    (0.99, 0.25 + 0.25 * 0.9),  # rank 9.9 lies in (0.25, 0.5], which holds the 10th
    (0.1, 0.05 * 1 / 2),  # the lowest bucket interpolates from 0
    (1.0, 0.5),
])
def test_histogram_quantile_interpolates_within_the_bucket(q: float, want: float) -> None:
    buckets = [(0.05, 2.0), (0.1, 6.0), (0.25, 9.0), (0.5, 10.0), (INF, 10.0)]
    assert histogram_quantile(q, buckets) == pytest.approx(want)


def test_histogram_quantile_edges() -> None:
    assert histogram_quantile(0.99, [(0.1, 0.0), (INF, 0.0)]) is None  # nothing observed
    assert histogram_quantile(0.99, [(0.1, 1.0), (1.0, 1.0), (INF, 5.0)]) == 1.0  # in +Inf: the highest bound
    assert histogram_quantile(0.5, [(0.1, 4.0)]) is None  # no +Inf bucket: not a whole histogram
    with pytest.raises(ValueError):
        histogram_quantile(1.5, [(INF, 1.0)])


def test_bucket_increase_is_the_observations_between_two_scrapes() -> None:
    older = [(0.1, 2.0), (1.0, 3.0), (INF, 3.0)]
    newer = [(0.1, 2.0), (1.0, 8.0), (INF, 9.0)]
    assert bucket_increase(older, newer) == [(0.1, 0.0), (1.0, 5.0), (INF, 6.0)]
    assert bucket_increase(newer, older) == older  # a reset: the newer counts whole
    assert histogram_quantile(0.5, bucket_increase(older, newer)) == pytest.approx(0.1 + 0.9 * 3 / 5)


def test_history_keeps_the_window_and_one_scrape_before_it() -> None:
    h = History(window_s=10.0)
    for t in range(0, 30, 2):
        h.add(Scrape("SH", float(t), parse_metrics("")))
    times = [s.at for s in h.window("SH")]
    assert times[0] <= times[-1] - 10.0 < times[1]
    assert times[-1] == 28.0
    h.add(Scrape("SH", 30.0, None, error="timed out"))
    assert h.latest["SH"].error == "timed out" and h.window("SH")[-1].at == 28.0


def scrapes_of_a_known_exchange() -> History:
    """SH sends JS 10 messages between two scrapes 5 s apart; JS delivers 8 and rejects 2 (bad_signature)."""
    sh, js = Metrics("SH", "0.1.0", "ES256"), Metrics("JS", "0.1.0", "ES256")
    h = History(window_s=10.0)
    ready = Readiness(True, {"broker": True}, [])
    sh.messages.labels("out", "JS", "license", "accepted").inc(20)
    js.messages.labels("in", "SH", "license", "delivered").inc(20)
    js.messages.labels("in", "SH", "yrdx", "delivered").inc(50)  # receipts: not platform traffic
    for _ in range(20):
        js.end_to_end_seconds.labels("SH", "license").observe(0.02)
    h.add(Scrape("SH", 100.0, parse_metrics(text(sh)), readiness=ready, asked_at=99.9))
    h.add(Scrape("JS", 100.0, parse_metrics(text(js)), readiness=ready, asked_at=99.9))
    sh.messages.labels("out", "JS", "license", "accepted").inc(10)
    js.messages.labels("in", "SH", "license", "delivered").inc(8)
    js.messages.labels("in", "SH", "license", "rejected").inc(2)
    js.dead_letters.labels("bad_signature", "SH").inc(2)
    for _ in range(8):
        js.end_to_end_seconds.labels("SH", "license").observe(0.4)
    js.consumer_lag.labels("1").set(3)
    js.certificate_expiry.labels("own", "JS").set(86400 * 10)
    js.certificate_expiry.labels("root", "CN=root").set(86400 * 300)
    js.broker_up.set(1)
    h.add(Scrape("SH", 105.0, parse_metrics(text(sh)), readiness=ready, asked_at=104.9))
    h.add(Scrape("JS", 105.0, parse_metrics(text(js)), readiness=Readiness(False, {"consumer": False}, ["consumer"]),
                 asked_at=104.9))
    return h


def test_a_region_pair_from_both_ends() -> None:
    p = pair_figures("SH", "JS", scrapes_of_a_known_exchange())
    assert p["sent"] == {"total": 30.0, "rate": 2.0}
    assert p["delivered"] == {"total": 28.0, "rate": 8 / 5}  # the 50 receipts are not counted
    assert p["rejected"] == {"total": 2.0, "rate": 2 / 5}
    assert p["error_ratio"] == pytest.approx(0.2)
    assert p["error_ratio_total"] == pytest.approx(2 / 30)
    assert p["p99_s"] == pytest.approx(0.25 + 0.25 * (0.99 * 8 - 0) / 8)  # the window's 8, all in (0.25, 0.5]
    assert 0.25 < p["p99_total_s"] <= 0.5  # 28 observations, 8 of them slow
    empty = pair_figures("JS", "SH", scrapes_of_a_known_exchange())
    assert empty["sent"]["total"] == 0 and empty["p99_s"] is None and empty["error_ratio"] is None


def test_a_region_card() -> None:
    js = region_figures("JS", scrapes_of_a_known_exchange())
    assert js["up"] and js["ready"] is False and js["failing"] == ["consumer"]
    assert js["asked_at"] == 104.9 and js["scraped_at"] == 105.0
    assert js["lag"] == {"total": 3.0, "partitions": {"1": 3.0}}
    assert js["soonest_expiry"] == {"role": "own", "name": "JS", "seconds": 864000.0}
    assert js["dead_letters"]["total"] == 2 and js["dead_letters"]["rate"] == pytest.approx(0.4)
    assert js["dead_letters"]["by_reason"]["bad_signature"]["total"] == 2
    assert js["in"]["delivered"] == {"total": 28.0, "rate": 8 / 5}
    assert js["broker_up"] == 1 and js["build"]["region"] == "JS"
    missing = region_figures("ZJ", scrapes_of_a_known_exchange())
    assert missing["up"] is False and missing["lag"] is None and missing["certificates"] == []


def test_the_snapshot_holds_every_pair_and_the_reasons() -> None:
    h = scrapes_of_a_known_exchange()
    doc = snapshot(["SH", "JS"], h, 106.0, 2.0)
    assert [(p["from"], p["to"]) for p in doc["pairs"]] == [("SH", "JS"), ("JS", "SH")]
    assert doc["dead_letter_reasons"] == {"bad_signature": {"total": 2.0, "rate": pytest.approx(0.4),
                                                            "regions": {"JS": 2.0}}}
    assert doc["throughput"]["regions"]["SH"]["out"] == [2.0]
    assert doc["regions"]["SH"]["out"]["accepted"]["total"] == 30


def test_a_restarted_gateway_does_not_make_a_negative_rate() -> None:
    before, after = Metrics("SH"), Metrics("SH")
    before.messages.labels("out", "JS", "license", "accepted").inc(100)
    after.messages.labels("out", "JS", "license", "accepted").inc(4)  # the process started again
    h = History(window_s=10.0)
    h.add(Scrape("SH", 0.0, parse_metrics(text(before))))
    h.add(Scrape("SH", 2.0, parse_metrics(text(after))))
    assert pair_figures("SH", "JS", h)["sent"] == {"total": 4.0, "rate": 2.0}
