"""``GET /problems/{type}``: what each problem type means and what to do about it.

Every problem document's ``type`` is a relative URI, ``/problems/<type>`` (RFC 9457 §3.1.1: resolved
against the request's URI), so it leads to this resource on the service that answered: the type's
title, when it happens and what the client should do. docs/problems.md is the same table
(tests/unit/test_problems.py keeps them in step), and every type the code raises is registered
here (the same test greps for them).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from aiohttp import web

from app.api.errors import Problem


class Kind(NamedTuple):
    status: int
    meaning: str
    action: str


RETRY: Final = "retry after the `Retry-After` seconds, on this instance or another"

KINDS: Final[dict[str, Kind]] = {
    "bad-request": Kind(400, "the request is not valid HTTP/1.1 (the parser's reason is in `detail`)",
                        "fix the client"),
    "bad-level": Kind(400, "`level` is not an integer (ASCII digits, optional minus) within -7..22",
                      "send a level from -7 to 22, or none for 3"),
    "bad-checksum": Kind(400, "`checksum` is neither 0 nor 1", "send 0 or 1"),
    "bad-alg": Kind(400, "`alg` is neither `zstd` nor `lz77_zstd`, or is `lz77_zstd` with `dict` (a dictionary "
                    "is zstd's)", "send `alg=zstd` (the default) or `alg=lz77_zstd` without `dict`"),
    "bad-parameter": Kind(400, "a query parameter this resource does not know (`detail` names it)",
                          "remove it; /compress takes `level`, `checksum`, `dict` and `alg`, /decompress none"),
    "corrupt-frame": Kind(400, "the body of /decompress is not a valid zstd frame (or is truncated)",
                          "send the complete output of /compress or of `zstd`"),
    "empty-body": Kind(400, "/decompress got an empty body; a zstd frame is never empty (`zstd -d` refuses "
                       "empty input too)", "send a frame"),
    "unknown-frame-dictionary": Kind(400, "the frame sent to /decompress names a zstd dictionary this service "
                                     "does not have (`detail` has its id)",
                                     "decompress it where its dictionary is, or upload that dictionary's samples"),
    "mixed-frame-dictionaries": Kind(400, "the frames of one body sent to /decompress name different zstd "
                                     "dictionaries (`detail` has their ids); a body is decoded with one, as "
                                     "`zstd -D` takes one (a streamed body, over `--stream-above`, may mix them)",
                                     "send each dictionary's frames as a request of its own"),
    "stream-context-too-large": Kind(400, "a body over `--stream-above` streams, and its zstd context alone would "
                                     "be more than `--stream-memory` (a level-22 stream needs ~830 MiB; `detail` "
                                     "names the highest level that fits)",
                                     "stream at a lower level, or send a body under `--stream-above`"),
    "too-few-samples": Kind(400, "POST /dictionaries got fewer than 8 sample parts", "send a few hundred samples"),
    "training-failed": Kind(400, "zstd could not train a dictionary on the samples (too little or too uniform "
                            "data for the size asked for)", "send more, or more varied, samples, or a smaller `size`"),
    "bad-dictionary-size": Kind(400, "`size` of POST /dictionaries is not a number of bytes from 1024",
                                "send a size from 1024, or none for 16 KiB"),
    "not-found": Kind(404, "no resource at this path", "see `GET /` for the API"),
    "unknown-dictionary": Kind(404, "no dictionary with this id (`?dict=` of /compress, or /dictionaries/{id}); "
                               "ids are the decimal ones `POST /dictionaries` returns",
                               "see `GET /dictionaries`; train one with `POST /dictionaries`"),
    "method-not-allowed": Kind(405, "the resource exists but not for this method", "use a method from `Allow`"),
    "header-timeout": Kind(408, "the request head did not arrive within `--header-timeout`",
                           "send the head at once; the connection is closed"),
    "body-timeout": Kind(408, "the body did not arrive within `--body-timeout`",
                         "send the body at a steady pace, or in a shorter request"),
    "too-many-dictionaries": Kind(409, "the service keeps `--max-dictionaries` dictionaries already",
                                  "DELETE one you no longer need, or ask the operator to raise the limit"),
    "dictionary-exists": Kind(409, "the trained dictionary has the id of one the service keeps already",
                              "use that one, or DELETE it first"),
    "dictionary-too-large": Kind(413, "`size` of POST /dictionaries is over `--max-dictionary-size`",
                                 "ask for a smaller dictionary"),
    "body-too-large": Kind(413, "the body is over `--max-stream` (announced, or as it arrived); bodies over "
                           "`--max-body` stream, so only `--max-stream` bounds a body",
                           "send less, or ask the operator to raise `--max-stream`"),
    "lz77-body-too-large": Kind(413, "with `alg=lz77_zstd` the body is over `--stream-above`, or its BD outputs "
                                "(~3.7 times the body, all at once) would not fit beside it in an idle worker's heap "
                                "(`detail` names the largest body that does): lz77_zstd compresses whole bodies only, "
                                "its frame built from all of their BDs",
                                "send it with `alg=zstd`, which streams a body of any size, or in parts"),
    "output-too-large": Kind(413, "the decompressed output would be over `--max-body` (`--max-stream` for a "
                             "streamed body; a decompression bomb is stopped here)",
                             "decompress it elsewhere, or in parts"),
    "uri-too-long": Kind(414, "the request line is over 4094 bytes", "shorten the target"),
    "not-multipart": Kind(415, "POST /dictionaries got a body that is not `multipart/form-data`",
                          "send one part per sample (`curl -F s=@sample1 -F s=@sample2 ...`)"),
    "unsupported-encoding": Kind(415, "the body has a `Content-Encoding` other than identity; the service "
                                 "compresses exactly what it receives", "send the body without an encoding"),
    "expectation-failed": Kind(417, "an `Expect` other than `100-continue`", "send `Expect: 100-continue` or none"),
    "header-too-large": Kind(431, "a header field is over 8190 bytes", "shorten it"),
    "too-many-headers": Kind(431, "more than 128 header fields", "send fewer"),
    "http-error": Kind(400, "another HTTP error aiohttp raised (status and reason in the document)",
                       "read `detail`"),
    "internal": Kind(500, "the server failed; its log has the traceback", "retry; report it if it persists"),
    "engine-error": Kind(500, "the accelerator failed the job in a way the cpu could not recover",
                         "retry; report it if it persists"),
    "overloaded": Kind(503, "the worker has `--max-pending` requests in progress, `--max-connections` "
                       "connections, or no SVA heap left for this body", RETRY),
    "timeout": Kind(503, "the job did not finish within `--job-timeout`", RETRY),
    "no-instance": Kind(503, "the load balancer (the shipped HAProxy) found no healthy warpzip instance", RETRY),
    "stream-memory-full": Kind(503, "the zstd context of a streamed body does not fit `--stream-memory` beside "
                               "the streams in progress (each is charged zstd's estimate: ~90 MiB at level 19, "
                               "~830 MiB at 22)",
                               "retry after `Retry-After` seconds, or stream at a lower level"),
    "shutting-down": Kind(503, "the server is stopping and the job could not finish before "
                          "`--shutdown-timeout`", RETRY),
}


async def handle(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    kind = KINDS.get(slug)
    if kind is None:
        raise Problem(404, "not-found", f"no problem type {slug!r}; GET /problems lists them")
    return web.Response(text=f"{slug} ({kind.status})\n\n{kind.meaning}.\n\nWhat to do: {kind.action}.\n")


async def handle_index(request: web.Request) -> web.Response:
    return web.Response(text="".join(f"/problems/{slug:<22} {kind.status}  {kind.meaning}\n"
                                     for slug, kind in KINDS.items()))
