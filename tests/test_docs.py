"""The documentation: every relative link and image in README.md and docs/ resolves, the MkDocs site builds with
--strict (a broken link or a page missing from the site fails), and the README stays a user's page."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(page):
    missing = [t for t in _relative_links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert not missing, f"{page.name}: links to missing files {missing}"


def test_the_link_checker_sees_links_and_images(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("![a](img.png) [b](docs/x.md#part) [c](https://example.org) [d](#here)\n```\n[e](code.md)\n```\n")
    assert _relative_links(page) == ["img.png", "docs/x.md#part"]


def test_mkdocs_builds_the_site_strictly(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    built = {p.parent.name for p in (tmp_path / "site").glob("*/index.html")}
    assert {"method", "results", "data", "operations", "performance"} <= built


def test_the_readme_is_for_users():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    # no commit hashes: engineering history belongs in docs/ and CHANGELOG.md
    hashes = [w for w in re.findall(r"\b[0-9a-f]{7,40}\b", text) if re.search(r"\d", w) and re.search(r"[a-f]", w)]
    assert not hashes, hashes
