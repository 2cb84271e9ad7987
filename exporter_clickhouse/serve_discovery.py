"""Where a running ``llmtel serve`` listens: ``<store>/.llmtel-serve.json``, and how to find it.

Kept apart from ``serve`` so that readers (the ``llmtel`` commands) can look without importing the
server and its protobuf modules. The file is written 0600 from the start: it holds the token.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

__all__ = ["DISCOVERY_FILE_NAME", "discovery_path", "find_serve_endpoint", "remove_discovery", "write_discovery"]

DISCOVERY_FILE_NAME = ".llmtel-serve.json"

def discovery_path(store_path: str) -> Path:
    return Path(os.path.realpath(store_path)) / DISCOVERY_FILE_NAME


def write_discovery(store_path: str, url: str, token: str) -> Path:
    path = discovery_path(store_path)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    document = {"url": url, "pid": os.getpid(), "token": token, "started": time.time()}
    # Created 0600 from the start: the token must never be readable by others, not even briefly.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(document, file)
    os.replace(temporary, path)
    return path


def remove_discovery(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def find_serve_endpoint(store_path: str) -> str | None:
    """The URL of the ``llmtel serve`` that owns ``store_path``, or None when none runs.

    The URL carries the token as the password (``http://default:<token>@127.0.0.1:4318``), so it
    can go to ``clickhouse_connect.get_client(dsn=url)`` or ``OTEL_EXPORTER_CLICKHOUSE_ENDPOINT``
    as it is. A file left by a server that died (its process is gone) counts as none.
    """
    try:
        document = json.loads(discovery_path(store_path).read_text())
        url, pid = str(document["url"]), int(document["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    token = str(document.get("token") or "")
    if not token:
        return url
    parts = urlsplit(url)
    return parts._replace(netloc=f"default:{quote(token, safe='')}@{parts.netloc}").geturl()
