"""The report page in a real browser: opened from file://, every picture loads.

Runs Debian's headless chromium. A missing browser fails the test: CI
installs it, and a report nobody has seen render is not tested.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from PIL import Image as PILImage
from report_data import fill

from imgq.db.migrate import upgrade
from imgq.report.queries import ResultFilter
from imgq.report.render import build_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# Records each picture's natural width into the page once everything loaded.
WIDTH_PROBE = """
<script>
window.addEventListener("load", () => {
  const widths = Array.from(document.images).map(
    (image) => [image.getAttribute("src"), image.naturalWidth]);
  const out = document.createElement("pre");
  out.id = "image-widths";
  out.textContent = JSON.stringify(widths);
  document.body.appendChild(out);
});
</script>
"""


def chromium(*arguments: str, profile: Path) -> str:
    assert Path(CHROMIUM).is_file(), (
        f"{CHROMIUM} is missing: install it with 'apt-get install -y chromium'"
    )
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *arguments,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def test_report_page_shows_every_picture_from_file_url(
    sqlite_url: str, tmp_path: Path
) -> None:
    upgrade(sqlite_url)
    fill(sqlite_url, tmp_path / "images")
    record = build_report(
        result_filter=ResultFilter(job=1), output_dir=tmp_path / "report"
    )

    probe = tmp_path / "probe"
    shutil.copytree(record.path.parent, probe)
    page = (probe / "index.html").read_text(encoding="utf-8")
    (probe / "index.html").write_text(
        page.replace("</body>", WIDTH_PROBE + "</body>"), encoding="utf-8"
    )
    dom = chromium(
        "--dump-dom", (probe / "index.html").as_uri(), profile=tmp_path / "a"
    )
    found = re.search(r'<pre id="image-widths">(.*?)</pre>', dom, re.DOTALL)
    assert found, dom[-2000:]
    widths = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(widths) == 6
    assert all(width > 0 for _, width in widths), widths

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report-page.png"
    screenshot.unlink(missing_ok=True)
    chromium(
        f"--screenshot={screenshot}",
        "--window-size=1280,4000",
        "--hide-scrollbars",
        record.path.as_uri(),
        profile=tmp_path / "b",
    )
    with PILImage.open(screenshot) as picture:
        assert picture.size == (1280, 4000)
        # a page that failed to render is one colour
        assert len(picture.convert("L").getcolors(maxcolors=1 << 16) or []) > 10
