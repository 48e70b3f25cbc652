"""Render the committed notebooks as a reader sees them: HTML (nbconvert), then PNG.

Each ``notebooks/*.ipynb`` becomes ``<out>/<name>.html`` and a headless-Chromium
screenshot ``<out>/<name>.png`` (white margin at the bottom cropped), plus
``<name>-1.png``, ``<name>-2.png``, ... slices of at most ``--slice`` pixels for
viewers that shrink tall images. Needs nbconvert and Pillow (``.[dev]``) and a
``chromium`` binary (Debian: ``apt-get install -y chromium``).

Usage: python bench/render_notebooks.py [--out build/screens] [--width 1200] [NOTEBOOK ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no chromium found: apt-get install -y chromium")


def screenshot(page: Path, png: Path, *, width: int, height: int) -> None:
    """A headless-Chromium screenshot of ``page`` (no network, no profile kept)."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            chromium(),
            "--headless",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            page.resolve().as_uri(),
        ]
        if os.geteuid() == 0:
            command.insert(2, "--no-sandbox")  # Chromium refuses to sandbox as root
        subprocess.run(command, check=True, capture_output=True, timeout=120)


def crop_and_slice(png: Path, slice_height: int) -> list[Path]:
    """Crop the white bottom margin; write slices for image viewers."""
    from PIL import Image, ImageChops

    image = Image.open(png).convert("RGB")
    background = Image.new("RGB", image.size, (255, 255, 255))
    box = ImageChops.difference(image, background).getbbox()
    if box is not None:
        image = image.crop((0, 0, image.width, min(image.height, box[3] + 20)))
    image.save(png, optimize=True)
    slices = []
    for k, top in enumerate(range(0, image.height, slice_height), start=1):
        part = png.with_name(f"{png.stem}-{k}.png")
        image.crop((0, top, image.width, min(image.height, top + slice_height))).save(part)
        slices.append(part)
    return slices


def render(notebook: Path, out: Path, *, width: int, slice_height: int) -> list[Path]:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    page = out / f"{notebook.stem}.html"
    page.write_text(body, encoding="utf-8")
    png = out / f"{notebook.stem}.png"
    screenshot(page, png, width=width, height=16_000)
    return [png, *crop_and_slice(png, slice_height)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "screens")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--slice", type=int, default=1600, dest="slice_height")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for notebook in notebooks:
        for png in render(notebook, args.out, width=args.width, slice_height=args.slice_height):
            print(png)


if __name__ == "__main__":
    main()
