"""`partseg report`: the page is one file, and a real headless Chromium renders its
images and tables (Debian's `chromium`; CI installs it, so under CI=true it must run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_cli import EXAMPLES, SMALL, partseg

from partseg_cli.palette import part_palette

# Appended to a copy of the page: once it has loaded, count the images the browser
# decoded and laid out, and the tables it laid out, into an element --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const shown = images.filter(i => i.complete && i.naturalWidth > 0
                                   && i.getBoundingClientRect().height > 0);
  const tables = [...document.querySelectorAll("table")].filter(
    t => t.rows.length > 1 && t.getBoundingClientRect().height > 0);
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = `images ${shown.length}/${images.length} tables ${tables.length}`;
  document.body.appendChild(probe);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed (setup.sh installs it on CI)")
    pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")


def browse(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_renders_images_and_tables_in_headless_chromium(capsys, monkeypatch,
                                                               tmp_path: Path) -> None:
    browser = chromium()
    data, work, page = tmp_path / "data", tmp_path / "ws", tmp_path / "report.html"
    shutil.copytree(EXAMPLES, data)
    code, _, err = partseg(capsys, monkeypatch, "run", data, "--work", work, "--teacher",
                           "simulated", *SMALL)
    assert code == 0, err
    code, out, err = partseg(capsys, monkeypatch, "report", work, "--out", page)
    assert code == 0, err
    text = page.read_text()
    # self-contained: every image is inline, nothing is fetched
    assert "<img" in text and not re.search(r"src=\"(?!data:image/png;base64,)", text)
    assert "Per-part IoU" in text and "provenance" in text and "Chair_chair0" in text

    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", PROBE + "</body>"))
    done = browse(browser, tmp_path / "profile", "--virtual-time-budget=10000",
                  "--dump-dom", probed.as_uri())
    found = re.search(r"images (\d+)/(\d+) tables (\d+)", done.stdout)
    assert found, done.stderr[-2000:]
    shown, images, tables = map(int, found.groups())
    assert images == 8 and shown == images  # 4 chairs x 2 views, all decoded and laid out
    assert tables >= 3  # scores, per-part IoU, provenance per shape

    shot = tmp_path / "shot.png"
    done = browse(browser, tmp_path / "profile", "--window-size=1280,1400",
                  f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 200  # text, tables and pictures, not blank
    # the part colours of the thumbnails are on screen
    for colour in part_palette(4)[:2]:
        assert (np.abs(pixels.astype(int) - colour).sum(axis=1) < 6).sum() > 200


def test_report_of_many_shapes_keeps_pictures_to_the_first(capsys, monkeypatch,
                                                           tmp_path: Path) -> None:
    data, work, page = tmp_path / "data", tmp_path / "ws", tmp_path / "report.html"
    shutil.copytree(EXAMPLES, data)
    code, _, err = partseg(capsys, monkeypatch, "run", data, "--work", work, "--teacher",
                           "simulated", "--views", "2", "--resolution", "96", "--points",
                           "800")
    assert code == 0, err
    code, _, err = partseg(capsys, monkeypatch, "report", work, "--out", page,
                           "--max-pictures", "1", "--view", "1")
    assert code == 0 and "4 shapes, 1 images" in err, err
    text = page.read_text()
    assert text.count("<img") == 1 and "Pictures of the first 1 of 4 shapes" in text
    assert all(f"Chair_chair{i}" in text for i in range(4))  # every shape still listed
    assert "teacher 2D mIoU before" in text and "teacher box precision" in text
