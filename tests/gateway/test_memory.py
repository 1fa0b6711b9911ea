"""`edgegw run` leaves out what it does not use (issue 7: resident memory)."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from common.libc import limit_malloc_arenas, release_free_memory
from gateway.metrics import Family, ProcessMetrics, render

_RUN_IMPORTS = "import gateway.config, gateway.runtime, gateway.metrics, gateway.http, bridge.kafka"


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_run_never_loads_rich_pygments_or_prometheus_client() -> None:
    out = _python(
        "import sys; from gateway.cli import _import_structlog; _import_structlog(); "
        f"{_RUN_IMPORTS}; print(sorted({{m.split('.')[0] for m in sys.modules}}"
        " & {'rich', 'pygments', 'prometheus_client'}))"
    )
    assert out.strip() == "[]"


def test_rich_still_imports_afterwards_for_the_demo() -> None:
    out = _python("from gateway.cli import _import_structlog as s; s(); import rich.live; print(1)")
    assert out.strip() == "1"


def test_an_explicit_malloc_arena_max_wins() -> None:
    assert limit_malloc_arenas({"MALLOC_ARENA_MAX": "4"}) is False
    release_free_memory()  # harmless at any time


def _families(seed: int) -> list[Family]:
    rng = random.Random(seed)
    values = [0, 1, 0.1, 1e-9, 1234567.0, 12345678.9, 1e20, -5.5, float("inf"), float("nan"), 10**12]
    texts = ["a", 'q"uote', "back\\slash", "new\nline", "ünï", ""]
    out = []
    for i in range(100):
        labels = tuple(rng.sample(["device", "reason", "profile", "zeta"], rng.randint(0, 3)))
        doc = rng.choice(["doc", "a \\ and\na newline"])
        family = Family(f"m_{i}", doc, "counter" if rng.random() < 0.5 else "gauge", labels)
        for _ in range(rng.randint(0, 3)):
            family.add([rng.choice(texts) for _ in labels], rng.choice(values))
        out.append(family)
    return out


class _AsPrometheusClient:
    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for f in self.families:
            metric = (CounterMetricFamily if f.kind == "counter" else GaugeMetricFamily)(
                f.name, f.doc, labels=list(f.labels)
            )
            for values, value in f.samples:
                metric.add_metric(list(values), value)
            yield metric


def test_metrics_text_is_what_prometheus_client_writes() -> None:
    families = _families(7)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_AsPrometheusClient(families))
    assert render(families) == generate_latest(registry)


def test_process_metrics() -> None:
    names = [f.name for f in ProcessMetrics().collect()]
    assert names == [
        "python_gc_collections", "python_gc_objects_collected", "edgegw_gc_pause_seconds",
        "edgegw_gc_pause_longest_seconds", "process_virtual_memory_bytes", "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_cpu_seconds", "process_open_fds", "process_max_fds",
    ]  # fmt: skip
    assert b"process_cpu_seconds_total " in render(ProcessMetrics().collect())
