"""``/dictionaries``: train zstd dictionaries on sample bodies, list, fetch and retire them.

``POST /dictionaries`` takes ``multipart/form-data``, one part per sample, and ``?size=`` (bytes,
default 16 KiB, at most ``--max-dictionary-size``); it answers 201 with ``Location`` and the id
zstd writes into every frame compressed with the dictionary (``POST /compress?dict=<id>``).
``GET /dictionaries/<id>`` returns the dictionary's bytes, so ``zstd -D`` decodes those frames
offline. Training runs in a thread: it takes a fraction of a second per few hundred samples, too
long for the event loop, as are the store's reads, writes and fsyncs. The files are
:mod:`app.dictstore`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import BodyPartReader, web

from app.api import body
from app.api.errors import Problem
from app.api.problems import KINDS
from app.dictionaries import WorkerDictionaries
from app.dictstore import DEFAULT_SIZE, MIN_SIZE, StoreError, train
from app.keys import CONFIG, DICTIONARIES
from warp import Dictionary, HeapExhausted

#: More parts than this is not a sample set but an attack on the parser.
MAX_SAMPLES: Final = 100_000


def parse_id(raw: str | None) -> int:
    """A dictionary id as zstd prints it (decimal, 1..2^32-1); 404 for anything else."""
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 10 or not 0 < int(raw) < 1 << 32:
        raise Problem(404, "unknown-dictionary", f"no dictionary {raw!r}; GET /dictionaries lists them")
    return int(raw)


def named(dictionaries: WorkerDictionaries, raw: str) -> Dictionary:
    """The dictionary ``?dict=`` names, or the 404 a client gets for an unknown one (the 503 of a
    full heap if this worker has yet to load it)."""
    try:
        found = dictionaries.named(parse_id(raw))
    except HeapExhausted:
        raise body.out_of_memory() from None
    if found is None:
        raise Problem(404, "unknown-dictionary", f"no dictionary {raw}; GET /dictionaries lists them")
    return found


def _size(raw: str | None, limit: int) -> int:
    if raw is None:
        return min(DEFAULT_SIZE, limit)
    if not raw.isascii() or not raw.isdigit() or int(raw) < MIN_SIZE:
        raise Problem(400, "bad-dictionary-size", f"size must be a number of bytes from {MIN_SIZE}, got {raw!r}")
    if int(raw) > limit:
        raise Problem(413, "dictionary-too-large", f"size {raw} is over the limit of {limit} bytes "
                      "(--max-dictionary-size)")
    return int(raw)


async def _samples(request: web.Request, limit: int) -> list[bytes]:
    """Every part of the multipart body, within ``limit`` bytes in all (``--max-body``)."""
    if not request.content_type.startswith("multipart/"):
        raise Problem(415, "not-multipart", f"the samples must be multipart/form-data, one part per sample, "
                      f"not {request.content_type}")
    body.check_length(request, limit)
    samples: list[bytes] = []
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or len(samples) >= MAX_SAMPLES:
            raise Problem(400, "bad-request", f"samples must be flat parts, at most {MAX_SAMPLES} of them")
        chunks = []
        while chunk := await part.read_chunk():
            total += len(chunk)
            if total > limit:
                raise Problem(413, "body-too-large", f"the samples passed the limit of {limit} bytes")
            chunks.append(chunk)
        samples.append(b"".join(chunks))
    return samples


async def handle_create(request: web.Request) -> web.Response:
    config, dictionaries = request.app[CONFIG], request.app[DICTIONARIES]
    for name in request.query:
        if name != "size":
            raise Problem(400, "bad-parameter", f"unknown query parameter {name!r} (/dictionaries takes size)")
    size = _size(request.query.get("size"), config.max_dictionary_size)
    samples = await _samples(request, config.max_body)
    store = dictionaries.store
    loop = asyncio.get_running_loop()
    try:
        data = await loop.run_in_executor(None, train, samples, size)
        dict_id = await loop.run_in_executor(None, store.add, data)
    except StoreError as exc:
        raise Problem(KINDS[exc.slug].status, exc.slug, str(exc)) from None
    location = f"/dictionaries/{dict_id}"
    return web.json_response({"id": dict_id, "size": len(data), "samples": len(samples), "location": location},
                             status=201, headers={"Location": location})


async def handle_list(request: web.Request) -> web.Response:
    store = request.app[DICTIONARIES].store
    entries = await asyncio.get_running_loop().run_in_executor(None, store.entries)
    return web.json_response({"dictionaries": [
        {"id": e.dict_id, "size": e.size, "created": e.created, "location": f"/dictionaries/{e.dict_id}"}
        for e in entries]})


async def handle_get(request: web.Request) -> web.Response:
    dict_id = parse_id(request.match_info["id"])
    data = await asyncio.get_running_loop().run_in_executor(None, request.app[DICTIONARIES].store.read, dict_id)
    if data is None:
        raise Problem(404, "unknown-dictionary", f"no dictionary {dict_id}; GET /dictionaries lists them")
    return web.Response(body=data, content_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{dict_id}.dict"'})


async def handle_delete(request: web.Request) -> web.Response:
    dict_id = parse_id(request.match_info["id"])
    store = request.app[DICTIONARIES].store  # unlink and fsync the directory: off the loop
    if not await asyncio.get_running_loop().run_in_executor(None, store.delete, dict_id):
        raise Problem(404, "unknown-dictionary", f"no dictionary {dict_id}; GET /dictionaries lists them")
    return web.Response(status=204)


RESOURCES: Final[dict[str, dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]] = {
    "/dictionaries": {"GET": handle_list, "POST": handle_create},
    "/dictionaries/{id}": {"GET": handle_get, "DELETE": handle_delete},
}
