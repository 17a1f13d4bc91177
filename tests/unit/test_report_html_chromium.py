"""The HTML report renders in a real browser: headless Chromium (Debian's ``chromium``) draws both SVGs.

Needs the ``chromium`` package (``make setup`` installs it). Nothing is fetched: the report is a local
file with a Content-Security-Policy that forbids every external load, and Chromium runs with
networking features off.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator.journal import read_journal, verify_journal
from orchestrator.model import Inventory
from orchestrator.report import build_report, render_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make setup installs it)")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def _synthetic() -> ModuleType:
    """The journal writers of test_report.py (loaded by path: tests are not a package)."""
    spec = importlib.util.spec_from_file_location("_report_journals", Path(__file__).with_name("test_report.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium; one retry if the browser itself crashes (seen on a loaded 2-core machine)."""
    assert CHROMIUM is not None
    for attempt in range(2):
        run = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / f'profile-{attempt}'}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if run.returncode == 0:
            break
    return run


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and raw pixel rows (8-bit RGB or RGBA, non-interlaced: what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        filt = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if filt == 1:
                line[i] = (line[i] + a) & 0xFF
            elif filt == 2:
                line[i] = (line[i] + b) & 0xFF
            elif filt == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif filt == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line) if channels == 3 else bytes(v for k, v in enumerate(line) if k % 4 != 3))
        prev = line
    return width, height, rows


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from orchestrator.inventory import load_inventory

    inventory: Inventory = load_inventory(Path(__file__).parents[1] / "data" / "small.yml")
    tmp = tmp_path_factory.mktemp("report")
    journal = _synthetic().write_shutdown_run(tmp / "journal.jsonl", failing=True)
    report = build_report(read_journal(journal), inventory, verification=verify_journal(journal))
    out = tmp / "report.html"
    out.write_text(render_report(report, "html"), encoding="utf-8")
    return out


def test_chromium_renders_the_dependency_graph_and_the_timeline(report_html: Path, tmp_path: Path) -> None:
    run = chromium(tmp_path, "--dump-dom", report_html.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    assert re.search(r'<svg[^>]*id="dependency-graph"', dom)
    assert re.search(r'<svg[^>]*id="timeline-chart"', dom)
    for host in ("ant-ad1", "ant-emr-db1", "ant-emr-app1", "ant-ed-triage1", "deu-ad1"):
        assert f'id="node-{host}"' in dom
    assert dom.count('class="edge"') == 4
    assert dom.count('class="step-bar"') == 14
    assert 'class="milestone"' in dom


def test_chromium_screenshot_is_not_blank_and_shows_outcome_colours(report_html: Path, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    run = chromium(tmp_path, "--window-size=1280,1100", f"--screenshot={png}", report_html.as_uri())
    assert run.returncode == 0 and png.exists(), run.stderr[-2000:]
    width, height, rows = decode_png(png.read_bytes())
    assert (width, height) == (1280, 1100)
    colours: dict[bytes, int] = {}
    for row in rows[::2]:
        for x in range(0, len(row), 6):
            px = row[x : x + 3]
            colours[px] = colours.get(px, 0) + 1
    white = colours.get(b"\xff\xff\xff", 0)
    total = sum(colours.values())
    assert white < total * 0.97, "the page is (nearly) blank"
    assert len(colours) > 20
    # Outcome colours of the graph (failed red, kept green, stopped slate) and the bars (verified green).
    for hex_colour in ("dc2626", "15803d", "64748b", "16a34a"):
        assert bytes.fromhex(hex_colour) in colours, f"#{hex_colour} not drawn"
