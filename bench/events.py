"""A JSON-like corpus of API events, generated: the bodies zstd dictionaries are for.

Small bodies of one kind share their keys and structure but little else; a dictionary trained on
a few hundred of them carries what they share, so each compresses 2-5x better with it. Real event
streams are not in the Silesia corpus, so the dictionary benchmark and tests make their own, with
a seed, each record padded or cut to exactly ``size`` bytes.
"""

from __future__ import annotations

import json
import random

TYPES = ("order.created", "order.paid", "order.shipped", "user.login", "user.logout", "cart.updated")
AGENTS = ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", "curl/8.5.0",
          "okhttp/4.12.0", "python-requests/2.32.3")


def _item(rng: random.Random) -> dict[str, object]:
    return {"sku": f"SKU-{rng.randrange(10**4):05d}", "quantity": rng.randrange(1, 5),
            "price": {"amount": rng.randrange(100, 10**5), "currency": rng.choice(("EUR", "USD"))},
            "warehouse": rng.choice(("par-1", "fra-2", "iad-1"))}


def event(rng: random.Random, seq: int, size: int) -> bytes:
    """One event of exactly ``size`` bytes: items are added until it is long enough, then it is cut."""
    record: dict[str, object] = {
        "event_id": f"{rng.getrandbits(64):016x}", "type": rng.choice(TYPES), "seq": seq,
        "timestamp": f"2026-12-02T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z",
        "user": {"id": rng.randrange(10**6), "country": rng.choice(("FR", "DE", "US", "JP")),
                 "agent": rng.choice(AGENTS)},
        "request": {"method": rng.choice(("GET", "POST")), "path": f"/api/v2/orders/{rng.randrange(10**5)}",
                    "status": rng.choice((200, 201, 404, 500)), "latency_ms": round(rng.random() * 300, 2)},
    }
    items: list[dict[str, object]] = []
    record["items"] = items
    body = json.dumps(record).encode()
    while len(body) < size:
        items.append(_item(rng))
        body = json.dumps(record).encode()
    return body[:size]


def events(count: int, size: int = 1024, seed: int = 1) -> list[bytes]:
    """``count`` events of ``size`` bytes; the same seed gives the same events."""
    rng = random.Random(seed)
    return [event(rng, seq, size) for seq in range(count)]


def multipart(samples: list[bytes], boundary: str = "warpzip-samples-7f3a") -> tuple[bytes, str]:
    """``samples`` as a ``multipart/form-data`` body, one part each (what ``POST /dictionaries``
    takes, as ``curl -F``), and its Content-Type."""
    out = bytearray()
    for i, sample in enumerate(samples):
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"sample\"; filename=\"s{i}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        out += sample + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"
