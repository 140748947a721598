"""Trained dictionaries through the HTTP API: POST/GET/DELETE /dictionaries, /compress?dict=, and
/decompress of frames that name one — against real servers (an embedded device; a second server
on the cpu sharing the data directory; two workers of one server, each in turn), checked with
python-zstandard and the `zstd` CLI, never with the service itself."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from app.dictstore import MAGIC
from bench.events import events, multipart
from bench.proctree import snapshot_tree
from bench.soak import role
from tests.harness import ServerProc, require_tool, start_server, wait_until
from tests.harness.http import Reply, call, check_problem
from warp.device.launch import stop_process


def serve(base: Path, data: Path, *extra: str) -> ServerProc:
    base.mkdir(exist_ok=True)
    return start_server(base / "root", base / "server.log", "--access-log", "0", "--data-dir", str(data), *extra)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data") / "warpzip"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ServerProc]:
    server = serve(tmp_path_factory.mktemp("dict-server"), data_dir, "--engines", "2")
    yield server
    stop_process(server.proc)


def upload(server: ServerProc, samples: list[bytes], query: str = "") -> Reply:
    body, content_type = multipart(samples)
    return call(server.url, "POST", "/dictionaries" + query, body, {"Content-Type": content_type})


def created(server: ServerProc, samples: list[bytes], query: str = "") -> dict[str, Any]:
    reply = upload(server, samples, query)
    assert reply.status == 201, reply.body[:300]
    doc: dict[str, Any] = reply.json()
    assert reply.headers["Location"] == f"/dictionaries/{doc['id']}" == doc["location"]
    return doc


def compress(server: ServerProc, body: bytes, query: str) -> bytes:
    reply = call(server.url, "POST", "/compress" + query, body)
    assert reply.status == 200, reply.body[:300]
    return reply.body


@pytest.fixture(scope="module")
def trained(srv: ServerProc) -> dict[str, Any]:
    return created(srv, events(300))


def test_ratio_at_least_twice_on_1k_json_events_on_the_device(srv: ServerProc, trained: dict[str, Any]) -> None:
    bodies = events(200, seed=42)  # not the training samples
    plain = sum(len(compress(srv, b, "?level=3")) for b in bodies)
    frames = [compress(srv, b, f"?level=3&dict={trained['id']}") for b in bodies]
    ratio = plain / sum(map(len, frames))
    assert ratio >= 2.0, f"dictionary frames only {ratio:.2f}x smaller"
    data = call(srv.url, "GET", f"/dictionaries/{trained['id']}").body
    offline = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(data))
    assert [offline.decompress(f) for f in frames] == bodies
    for frame, body in zip(frames[:20], bodies, strict=False):
        reply = call(srv.url, "POST", "/decompress", frame)
        assert reply.status == 200 and reply.body == body
    engines = json.loads(call(srv.url, "GET", "/device").body)["devices"][0]["engines"]
    loads = [engine["dict_loads"] for engine in engines]
    # 420 dictionary jobs; one CDict and one DDict per engine at most (the device did the work).
    assert 1 <= sum(loads) and all(n <= 2 for n in loads), loads
    metrics = call(srv.url, "GET", "/metrics").body.decode()
    counted = re.search(r'^warpzip_dictionary_requests_total\{direction="compress"\} (\S+)$', metrics, re.M)
    assert counted is not None and float(counted.group(1)) >= len(bodies)
    assert re.search(r"^warpzip_dictionaries [1-9]", metrics, re.M)


def test_zstd_cli_decodes_with_the_served_dictionary(srv: ServerProc, trained: dict[str, Any], tmp_path: Path) -> None:
    zstd = require_tool("zstd")
    body = events(1, seed=99)[0]
    (tmp_path / "frame.zst").write_bytes(compress(srv, body, f"?dict={trained['id']}"))
    (tmp_path / "events.dict").write_bytes(call(srv.url, "GET", f"/dictionaries/{trained['id']}").body)
    out = subprocess.run([zstd, "-q", "-d", "-c", "-D", str(tmp_path / "events.dict"), str(tmp_path / "frame.zst")],
                         capture_output=True, check=True, timeout=30)
    assert out.stdout == body


def test_listed_with_its_size(srv: ServerProc, trained: dict[str, Any]) -> None:
    listed = {d["id"]: d for d in json.loads(call(srv.url, "GET", "/dictionaries").body)["dictionaries"]}
    assert listed[trained["id"]]["size"] == trained["size"] <= 16 << 10
    assert trained["samples"] == 300


@pytest.mark.parametrize(("method", "path", "body", "status", "slug"), [
    ("POST", "/compress?dict=12345", b"x", 404, "unknown-dictionary"),
    ("POST", "/compress?dict=abc", b"x", 404, "unknown-dictionary"),
    ("GET", "/dictionaries/12345", None, 404, "unknown-dictionary"),
    ("DELETE", "/dictionaries/12345", None, 404, "unknown-dictionary"),
    ("POST", "/dictionaries", b"just one body", 415, "not-multipart"),
    ("POST", "/dictionaries?size=10", b"", 400, "bad-dictionary-size"),
    ("POST", "/dictionaries?size=1073741824", b"", 413, "dictionary-too-large"),
    ("POST", "/dictionaries?sz=1", b"", 400, "bad-parameter"),
    ("PUT", "/dictionaries", b"", 405, "method-not-allowed"),
])
def test_problems(srv: ServerProc, method: str, path: str, body: bytes | None, status: int, slug: str) -> None:
    doc = check_problem(call(srv.url, method, path, body), status)
    assert doc["type"] == f"/problems/{slug}"


def test_too_few_samples(srv: ServerProc) -> None:
    assert check_problem(upload(srv, events(3)), 400)["type"] == "/problems/too-few-samples"


def test_untrainable_samples(srv: ServerProc) -> None:
    assert check_problem(upload(srv, [b""] * 20), 400)["type"] == "/problems/training-failed"


def test_a_frame_naming_an_unknown_dictionary_is_a_400(srv: ServerProc) -> None:
    foreign = zstandard.train_dictionary(8 << 10, list[bytes | bytearray | memoryview](events(300, seed=5)))
    frame = zstandard.ZstdCompressor(dict_data=foreign).compress(events(1)[0])
    doc = check_problem(call(srv.url, "POST", "/decompress", frame), 400)
    assert doc["type"] == "/problems/unknown-frame-dictionary" and str(foreign.dict_id()) in doc["detail"]


def test_frames_of_one_body_share_a_dictionary(srv: ServerProc, trained: dict[str, Any]) -> None:
    """/decompress of concatenated frames: a plain frame then one naming a dictionary decodes with it;
    frames naming two dictionaries are a 400 that names both, not a "corrupt frame"."""
    other = created(srv, events(300, seed=21))
    first, second = events(2, seed=22)
    plain = compress(srv, first, "")
    named = compress(srv, second, f"?dict={trained['id']}")
    reply = call(srv.url, "POST", "/decompress", plain + named)
    assert reply.status == 200 and reply.body == first + second
    mixed = named + compress(srv, first, f"?dict={other['id']}")
    doc = check_problem(call(srv.url, "POST", "/decompress", mixed), 400, srv.root)
    assert doc["type"] == "/problems/mixed-frame-dictionaries", doc
    assert str(trained["id"]) in doc["detail"] and str(other["id"]) in doc["detail"]


def test_another_process_sees_creates_and_deletes_at_once(tmp_path: Path, srv: ServerProc, data_dir: Path) -> None:
    """A second server on the same data directory stands for a second worker (both are processes
    that share nothing but the directory)."""
    other = serve(tmp_path, data_dir, "--device", "none")
    try:
        doc = created(srv, events(300, seed=11))
        body = events(1, seed=12)[0]
        frame = compress(other, body, f"?dict={doc['id']}")  # the cpu driver, with the dictionary
        assert zstandard.get_frame_parameters(frame).dict_id == doc["id"]
        assert call(srv.url, "POST", "/decompress", frame).body == body
        assert call(srv.url, "DELETE", f"/dictionaries/{doc['id']}").status == 204
        check_problem(call(other.url, "POST", f"/compress?dict={doc['id']}", body), 404)
        check_problem(call(other.url, "POST", "/decompress", frame), 400)
    finally:
        stop_process(other.proc)


def test_restart_keeps_every_dictionary_and_refuses_torn_ones(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = serve(tmp_path / "a", data, "--device", "none", "--max-dictionaries", "2")
    try:
        kept = created(first, events(300, seed=21))
        created(first, events(300, seed=22))
        assert check_problem(upload(first, events(300, seed=23)), 409)["type"] == "/problems/too-many-dictionaries"
    finally:
        stop_process(first.proc)
    # What a crash can leave: a temp file never renamed, a file whose content does not verify.
    (data / ".tmp-77-123").write_bytes(b"half a dictio")
    payload = b"not what was checksummed"
    (data / "555.zdict").write_bytes(MAGIC + hashlib.sha256(b"something else").digest() + payload)
    second = serve(tmp_path / "b", data, "--device", "none", "--max-dictionaries", "4")
    try:
        ids = {d["id"] for d in json.loads(call(second.url, "GET", "/dictionaries").body)["dictionaries"]}
        assert kept["id"] in ids and 555 not in ids and len(ids) == 2
        check_problem(call(second.url, "GET", "/dictionaries/555"), 404)
        check_problem(call(second.url, "POST", "/compress?dict=555", b"x"), 404)
        assert not (data / ".tmp-77-123").exists()
        frame = compress(second, b"hello " * 50, f"?dict={kept['id']}")
        assert zstandard.get_frame_parameters(frame).dict_id == kept["id"]
        log = second.log.read_text()
        assert "left by an interrupted write" in log and "555.zdict fails its checksum" in log
    finally:
        stop_process(second.proc)


def test_the_same_samples_twice_is_a_409(srv: ServerProc, trained: dict[str, Any]) -> None:
    doc = check_problem(upload(srv, events(300)), 409)
    assert doc["type"] == "/problems/dictionary-exists" and str(trained["id"]) in doc["detail"]


def test_nested_multipart_is_a_400(srv: ServerProc) -> None:
    body = (b"--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--\r\n\r\n--b--\r\n")
    reply = call(srv.url, "POST", "/dictionaries", body, {"Content-Type": "multipart/form-data; boundary=b"})
    assert check_problem(reply, 400)["type"] == "/problems/bad-request"


def test_samples_over_max_body_are_a_413(tmp_path: Path) -> None:
    small = serve(tmp_path, tmp_path / "data", "--device", "none", "--max-body", "256k")
    try:
        body, content_type = multipart(events(300))
        declared = call(small.url, "POST", "/dictionaries", body, {"Content-Type": content_type})
        assert check_problem(declared, 413)["type"] == "/problems/body-too-large"
        connection = http.client.HTTPConnection("127.0.0.1", small.port, timeout=30)
        chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
        try:  # chunked: no length to refuse up front, so the limit stops the upload as it arrives
            connection.request("POST", "/dictionaries", body=iter(chunks), headers={"Content-Type": content_type},
                               encode_chunked=True)
            response = connection.getresponse()
            chunked = Reply(response.status, response.headers, response.read())
        finally:
            connection.close()
        assert check_problem(chunked, 413)["type"] == "/problems/body-too-large"
        assert not (tmp_path / "data").exists(), "nothing was stored"
    finally:
        stop_process(small.proc)


def test_each_worker_sees_what_another_created_and_deleted(tmp_path: Path) -> None:
    """``--workers 2``: with one worker stopped (SIGSTOP), every new connection goes to the other,
    so each step below is served by the worker it names."""
    pair = serve(tmp_path, tmp_path / "data", "--workers", "2", "--device", "none")
    server = pair.proc.pid

    def workers() -> list[int]:
        return sorted(s.pid for s in snapshot_tree(server) if role(s, server) == "worker")

    wait_until(lambda: len(workers()) == 2, 10, "both workers to start")
    first, second = workers()

    def only(pid: int) -> None:
        os.kill(first if pid == second else second, signal.SIGSTOP)
        os.kill(pid, signal.SIGCONT)

    try:
        body = events(1, seed=31)[0]
        only(first)
        doc = created(pair, events(300, seed=30))
        frame = compress(pair, body, f"?dict={doc['id']}")  # the first worker loads its copy
        only(second)
        assert compress(pair, body, f"?dict={doc['id']}") == frame, "the second sees what the first created"
        assert call(pair.url, "DELETE", f"/dictionaries/{doc['id']}").status == 204
        only(first)
        check_problem(call(pair.url, "POST", f"/compress?dict={doc['id']}", body), 404)  # its copy is not served
        check_problem(call(pair.url, "POST", "/decompress", frame), 400)
    finally:
        for pid in (first, second):
            os.kill(pid, signal.SIGCONT)
        stop_process(pair.proc)
