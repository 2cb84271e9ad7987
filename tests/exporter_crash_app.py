"""An application that exports spans to ClickHouse with a BatchSpanProcessor, for crash tests.

    python tests/exporter_crash_app.py ENDPOINT DATABASE DATA_DIR SERVICE COUNT

Makes ``COUNT`` spans (``0`` means until killed), one at a time, each with its sequence number in
the ``seq`` attribute, all under ``service.name`` SERVICE. After every 20 spans it flushes the
processor (the exporter has then stored each batch or written it to its spool) and prints
``accepted N SLOWEST_MS``: the first N spans are accepted, and the slowest span the application
made took SLOWEST_MS. At the end it shuts the provider down and prints ``done``. The test kills
it with SIGKILL at any moment and checks that every accepted span is stored exactly once.
"""

from __future__ import annotations

import itertools
import sys
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from llmtel.exporter_clickhouse import ClickHouseSpanExporter


def main(endpoint: str, database: str, data_dir: str, service: str, count: int) -> None:
    exporter = ClickHouseSpanExporter(endpoint=endpoint, database=database, data_dir=data_dir,
                                      retry_max_elapsed="1s", timeout="2s")
    provider = TracerProvider(resource=Resource({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50, max_export_batch_size=40))
    tracer = provider.get_tracer("crash-app")
    slowest = 0.0
    numbers = range(count) if count else itertools.count()
    for number in numbers:
        started = time.perf_counter()
        with tracer.start_as_current_span("work") as span:
            span.set_attribute("seq", number)
        slowest = max(slowest, time.perf_counter() - started)
        if (number + 1) % 20 == 0:
            provider.force_flush()
            print(f"accepted {number + 1} {slowest * 1000:.1f}", flush=True)
        time.sleep(0.002)
    provider.shutdown()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
