"""End to end with the tools an operator would use: ``curl`` uploads, the ``zstd`` CLI decompresses.

``curl -sS --fail --data-binary @file URL/compress?level=L | zstd -d -c`` must give back the file
byte for byte, for every file of the Silesia corpus at levels 1, 3 and 19, an empty file, a
1-byte file and 1 MiB of random bytes; and the other way round,
frames the zstd CLI wrote decompress through the service.
"""

from __future__ import annotations

import filecmp
import os
import subprocess
from pathlib import Path

import pytest

from tests.harness import ServerProc, require_tool

pytestmark = pytest.mark.e2e

CORPUS_NAMES = ("dickens", "mr", "x-ray", "xml")
SMALL_NAMES = ("empty", "one-byte", "random-1MiB")
SLICE = 2 << 20


@pytest.fixture(scope="module")
def tools() -> dict[str, str]:
    """The real binaries; missing ones skip locally and fail in CI (``require_tool``)."""
    return {"curl": require_tool("curl"), "zstd": require_tool("zstd")}


@pytest.fixture(scope="module")
def files(corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every input by name: the corpus files, their 2 MiB slices (``<name>-2MiB``) and the small ones."""
    out = tmp_path_factory.mktemp("curl-inputs")
    found = dict(corpus)
    for name in CORPUS_NAMES:
        with corpus[name].open("rb") as src:
            (out / f"{name}-2MiB").write_bytes(src.read(SLICE))
        found[f"{name}-2MiB"] = out / f"{name}-2MiB"
    (out / "empty").write_bytes(b"")
    (out / "one-byte").write_bytes(b"\x2a")
    (out / "random-1MiB").write_bytes(os.urandom(1 << 20))
    for name in SMALL_NAMES:
        found[name] = out / name
    return found


def curl_into_zstd(tools: dict[str, str], url: str, src: Path, out: Path, *curl_args: str) -> None:
    """``curl ... --data-binary @src url | zstd -d -c > out``, failing on either side's exit status."""
    with out.open("wb") as sink:
        curl = subprocess.Popen([tools["curl"], "-sS", "--fail", *curl_args, "--data-binary", f"@{src}", url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert curl.stdout is not None
        zstd = subprocess.Popen([tools["zstd"], "-d", "-c", "-q"], stdin=curl.stdout, stdout=sink,
                                stderr=subprocess.PIPE)
        curl.stdout.close()  # zstd holds the read end now
        _, zstd_err = zstd.communicate(timeout=60)
        _, curl_err = curl.communicate(timeout=60)
    assert curl.returncode == 0, f"curl failed ({curl.returncode}): {curl_err.decode()}"
    assert zstd.returncode == 0, f"zstd -d failed ({zstd.returncode}): {zstd_err.decode()}"


def assert_same(expected: Path, got: Path) -> None:
    assert got.stat().st_size == expected.stat().st_size, (expected.name, got.stat().st_size)
    assert filecmp.cmp(expected, got, shallow=False), f"{got} differs from {expected}"


CASES = ([(name, level) for name in CORPUS_NAMES for level in (1, 3, 19)]
         + [(name, level) for name in SMALL_NAMES for level in (1, 3, 19)])


@pytest.mark.parametrize(("name", "level"), CASES, ids=[f"{n}-L{lv}" for n, lv in CASES])
def test_curl_compress_zstd_decompress(server: ServerProc, tools: dict[str, str], files: dict[str, Path],
                                       tmp_path: Path, name: str, level: int) -> None:
    out = tmp_path / "roundtrip"
    curl_into_zstd(tools, f"{server.url}/compress?level={level}", files[name], out)
    assert_same(files[name], out)


@pytest.mark.parametrize("name", ["xml", "x-ray-2MiB", "empty", "one-byte"])
def test_curl_chunked_upload(server: ServerProc, tools: dict[str, str], files: dict[str, Path], tmp_path: Path,
                             name: str) -> None:
    out = tmp_path / "roundtrip"
    curl_into_zstd(tools, f"{server.url}/compress?checksum=1", files[name], out,
                   "-H", "Transfer-Encoding: chunked")
    assert_same(files[name], out)


def test_curl_response_headers(server: ServerProc, tools: dict[str, str], files: dict[str, Path],
                               tmp_path: Path) -> None:
    """What curl sees: 200, application/zstd, the original length, a frame the zstd CLI can test."""
    src = files["dickens-2MiB"]
    frame = tmp_path / "dickens.zst"
    headers = subprocess.run([tools["curl"], "-sS", "--fail", "-D", "-", "-o", str(frame), "--data-binary",
                              f"@{src}", f"{server.url}/compress?level=3&checksum=1"],
                             capture_output=True, check=True, timeout=60).stdout.decode("latin-1").lower()
    headers = headers.strip().split("\r\n\r\n")[-1]  # after any "100 continue" interim response
    assert headers.startswith("http/1.1 200"), headers
    assert "content-type: application/zstd" in headers
    assert f"x-uncompressed-length: {src.stat().st_size}" in headers
    subprocess.run([tools["zstd"], "-t", "-q", str(frame)], check=True, timeout=60)
    listing = subprocess.run([tools["zstd"], "-lv", str(frame)], capture_output=True, check=True,
                             timeout=60).stdout.decode()
    assert "XXH64" in listing  # checksum=1 reached the frame


@pytest.mark.parametrize("name", ["mr", "xml-2MiB", "one-byte", "empty"])
@pytest.mark.parametrize("mode", ["file", "stream"])
def test_zstd_cli_frames_decompress_through_the_service(server: ServerProc, tools: dict[str, str], files: dict[str,
                                                        Path], tmp_path: Path, name: str, mode: str) -> None:
    """``zstd -c file`` declares the content size; ``zstd -c < file`` (a pipe) does not."""
    frame = tmp_path / "cli.zst"
    with frame.open("wb") as sink:
        if mode == "file":
            subprocess.run([tools["zstd"], "-q", "-c", "-3", str(files[name])], stdout=sink, check=True, timeout=60)
        else:
            with files[name].open("rb") as source:
                subprocess.run([tools["zstd"], "-q", "-c", "-3"], stdin=source, stdout=sink, check=True, timeout=60)
    out = tmp_path / "plain"
    subprocess.run([tools["curl"], "-sS", "--fail", "-o", str(out), "--data-binary", f"@{frame}",
                    f"{server.url}/decompress"], check=True, timeout=60)
    assert_same(files[name], out)


def test_curl_fail_on_bad_level(server: ServerProc, tools: dict[str, str], files: dict[str, Path]) -> None:
    """``--fail`` makes a rejected request an exit status, so a pipeline notices."""
    result = subprocess.run([tools["curl"], "-sS", "--fail", "-o", os.devnull, "--data-binary",
                             f"@{files['one-byte']}", f"{server.url}/compress?level=99"],
                            capture_output=True, timeout=30)
    assert result.returncode == 22
    assert b"400" in result.stderr


def test_curl_compressed_leaves_the_frame_alone(server: ServerProc, tools: dict[str, str], files: dict[str, Path],
                                                tmp_path: Path) -> None:
    """``curl --compressed`` asks for a Content-Encoding; the service answers the zstd frame as the
    body itself (application/zstd, no Content-Encoding), so curl passes it through untouched."""
    out = tmp_path / "out"
    curl_into_zstd(tools, f"{server.url}/compress", files["xml-2MiB"], out, "--compressed")
    assert_same(files["xml-2MiB"], out)
