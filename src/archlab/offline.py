"""Is the Hugging Face hub reachable? Asked once per process, so an offline machine fails in seconds.

huggingface_hub retries a failed request five times with back-off (about a minute per lookup). When the hub
does not answer, archlab loads tokenizers, models and datasets from the local cache only
(``local_files_only``), which either works at once or fails at once with the fix in the message.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlparse


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint accepts a connection (False too when HF_HUB_OFFLINE=1 is set)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    import huggingface_hub.constants as hub

    url = urlparse(hub.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    # getaddrinfo ignores socket timeouts (a dead resolver takes ~15 s): resolve in a daemon thread, bounded
    found: list = []
    resolver = threading.Thread(target=lambda: found.append(_resolve(url.hostname or "", port)), daemon=True)
    resolver.start()
    resolver.join(timeout)
    if not found or found[0] is None:
        return False
    family, kind, proto, _, sockaddr = found[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
        return True
    except OSError:
        return False


def _resolve(host: str, port: int):
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError:
        return None


def hub_kwargs() -> dict:
    """Keyword arguments for ``from_pretrained``: the local cache only when the hub does not answer."""
    return {} if hub_reachable() else {"local_files_only": True}


@contextlib.contextmanager
def datasets_offline_unless_reachable() -> Iterator[None]:
    """``datasets`` reads only its local cache inside the block when the hub does not answer."""
    import datasets.config as config

    saved = config.HF_HUB_OFFLINE
    config.HF_HUB_OFFLINE = saved or not hub_reachable()
    try:
        yield
    finally:
        config.HF_HUB_OFFLINE = saved
