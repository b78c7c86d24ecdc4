"""`GET /metrics` on the front door: every worker's series with a `worker` label, and the front door's own.

Each worker's Prometheus text is fetched at scrape time (concurrently, a bounded wait), parsed, and its
samples re-labelled `worker="<id>"`; families of the same name are merged, so `speakdraw_frames_in_total`
is one family with one series per worker. A worker that does not answer in time is left out of that
scrape (and `speakdraw_cluster_scrape_errors_total{worker}` counts it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from server.cluster.fleet import STATES, Fleet, WorkerView

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 2.0
OFFER_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def relabel(text: str, worker_id: str) -> list[Metric]:
    """The families of one worker's exposition, each sample with `worker` added."""
    families = []
    for family in text_string_to_metric_families(text):
        family.samples = [s._replace(labels={**s.labels, "worker": worker_id}) for s in family.samples]
        families.append(family)
    return families


def merge(per_worker: Iterable[list[Metric]]) -> list[Metric]:
    merged: dict[str, Metric] = {}
    for families in per_worker:
        for family in families:
            into = merged.get(family.name)
            if into is None:
                merged[family.name] = into = Metric(family.name, family.documentation, family.type, family.unit)
            into.samples.extend(family.samples)
    return list(merged.values())


class _Families:
    """A collector that yields the families of one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


class FrontDoorMetrics:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.workers = Gauge("speakdraw_cluster_workers", "Workers by state", ["state"], registry=r)
        for state in STATES:
            self.workers.labels(state=state).set_function(lambda s=state: fleet.counts()[s])
        self.offers = Counter(
            "speakdraw_cluster_offers",
            "Offers the front door sent a worker, by outcome: answered, refused (503), unreachable, error",
            ["worker", "outcome"],
            registry=r,
        )
        self.full = Counter("speakdraw_cluster_full", "Offers refused because no worker had room", registry=r)
        self.offer_seconds = Histogram(
            "speakdraw_cluster_offer_seconds",
            "Offer received -> answer sent, through the front door (the worker's time included)",
            buckets=OFFER_BUCKETS,
            registry=r,
        )
        self.scrape_errors = Counter(
            "speakdraw_cluster_scrape_errors", "Worker /metrics that did not answer in time", ["worker"], registry=r
        )

    async def _scrape(self, http: aiohttp.ClientSession, view: WorkerView) -> list[Metric]:
        try:
            async with http.get(f"{view.url}/metrics", timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)) as resp:
                resp.raise_for_status()
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("worker %s: /metrics failed: %r", view.id, exc)
            self.scrape_errors.labels(worker=view.id).inc()
            return []
        try:
            return relabel(text, view.id)
        except ValueError as exc:
            log.warning("worker %s: unreadable /metrics: %s", view.id, exc)
            self.scrape_errors.labels(worker=view.id).inc()
            return []

    async def render(self, http: aiohttp.ClientSession) -> bytes:
        views = [v for v in self.fleet.workers.values() if v.url and v.state != "dead"]
        scraped = await asyncio.gather(*(self._scrape(http, v) for v in sorted(views, key=lambda v: v.id)))
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(merge(scraped)))
        return generate_latest(self.registry) + generate_latest(registry)
