"""docs/device.md agrees with the code: ABI constants, status codes, SQE words, DFX columns, run
options, and a named, existing test for every one of the 22 behaviours of reference §7."""

from __future__ import annotations

import re

from tests.harness import REPO, DeviceProc
from warp import abi, cdev
from warp.device.main import parse_args
from warp.dfx import Dev, Engine, Queue

DOC = REPO / "docs" / "device.md"


def table(name: str) -> list[list[str]]:
    """The rows (cells stripped, header and rule skipped) of the table after ``<!-- table:name -->``."""
    lines = DOC.read_text().splitlines()
    start = lines.index(f"<!-- table:{name} -->") + 1
    rows: list[list[str]] = []
    for line in lines[start:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[2:]


def name(cell: str) -> str:
    return cell.strip("`")


def test_fidelity_docs_tables_match_the_abi() -> None:
    constants = {name(r[0]): int(r[1], 0) for r in table("constants")}
    for key, value in constants.items():
        assert getattr(abi, key) == value, f"docs say {key} = {value}, abi has {getattr(abi, key)}"
    assert {"QUEUE_DEPTH", "SQE_SIZE", "CQE_SIZE", "DUS_SIZE", "TX_STOP_OFFSET", "RX_STOP_OFFSET",
            "DOORBELL_BASE", "MMIO_SIZE"} <= constants.keys()
    latches = {name(r[0]): int(r[1], 0) for r in table("latches")}
    assert latches == {cmd.name: abi.doorbell_offset(cmd) for cmd in abi.DoorbellCmd}
    sqe = {name(r[1]): int(r[0]) for r in table("sqe")}
    assert sqe == {w.name: int(w) for w in abi.W}
    assert f"`0x{int(abi.Alg.ZSTD):02x}` = zstd" in DOC.read_text()
    for alg in (abi.Alg.LZ77_ZSTD, abi.Alg.LZ77_ZSTD_PRICE):  # ZIP's codes, by ZIP's names
        assert f"`0x{int(alg):02x}` = `HW_{alg.name}`" in DOC.read_text()


def test_status_codes_are_documented_exactly() -> None:
    documented = {name(r[1]): int(r[0], 16) for r in table("status")}
    assert documented == {s.name: int(s) for s in abi.Status}


def test_dfx_columns_are_documented_exactly() -> None:
    for tag, enum in (("dfx-dev", Dev), ("dfx-queue", Queue), ("dfx-engine", Engine)):
        documented = {name(r[1]): int(r[0]) for r in table(tag)}
        assert documented == {c.name: int(c) for c in enum}, tag


def test_every_run_option_is_documented() -> None:
    documented = {name(r[0]) for r in table("options")}
    defaults = parse_args([])
    flags = {"--" + key.replace("_", "-") for key in vars(defaults) if key != "parent_pipe"}
    assert documented == flags


def test_every_reference_behaviour_maps_to_existing_tests() -> None:
    rows = table("fidelity")
    assert [int(r[0]) for r in rows] == list(range(1, 23)), "the 22 behaviours of reference §7, in order"
    sources = "\n".join(p.read_text() for p in (REPO / "tests").rglob("test_*.py"))
    defined = set(re.findall(r"^def (test_\w+)", sources, re.M))
    for number, behaviour, status, _notes, tests in rows:
        assert status in {"modelled", "partly", "not"}, f"#{number}: status {status!r}"
        names = re.findall(r"`(test_\w+)`", tests)
        assert names, f"#{number} {behaviour}: no test named"
        missing = [t for t in names if t not in defined]
        assert not missing, f"#{number} {behaviour}: no such test {missing}"



def test_sysfs_table_matches_the_published_attributes(device: DeviceProc) -> None:
    """§2 lists exactly the attribute files a running device publishes, with their modes, and the
    values the ABI fixes (``api``, region sizes)."""
    documented = {name(r[0]): (int(r[1], 8), r[2]) for r in table("sysfs")}
    sysfs = cdev.DevicePaths(device.root, "warp_zip-0").sysfs
    published = {p.name: p.stat().st_mode & 0o777 for p in sysfs.iterdir() if not p.name.startswith(".")}
    assert {attr: mode for attr, (mode, _) in documented.items()} == published
    assert documented["api"][1].startswith(f"`{abi.API_VERSION}`")
    assert (sysfs / "api").read_text().strip() == abi.API_VERSION
    for attr, value in (("region_mmio_size", abi.MMIO_SIZE), ("region_dus_size", abi.DUS_SIZE)):
        assert documented[attr][1] == str(value) == (sysfs / attr).read_text().strip()
