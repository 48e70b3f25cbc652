"""The README's pictures: a run's plot (``docs/run.png``) and a caption grid (``docs/grid.png``).

Both come from real runs against the fake OpenAI server on 127.0.0.1 (no API key):

* ``run.png``: 240 prompts through ``prompt | ChatOpenAI | parser`` with
  ``max_concurrency="auto"``, against a server that admits 60 requests a second
  (so it answers the excess with 429 and ``Retry-After``) and fails 3% of
  requests with a 5xx; batchkit retries both.
* ``grid.png``: twelve drawn shapes and two broken files captioned by
  ``caption_images``; the server's captions are made up from each file's name.
  The grid is rendered by headless Chromium (see ``render_notebooks.py``).

Usage: python bench/plot_example.py [--out docs]
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI
from PIL import Image, ImageDraw

from bench.render_notebooks import screenshot
from langchain_batchkit import batchkit
from langchain_batchkit.multimodal import caption_images
from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig

ROOT = Path(__file__).resolve().parent.parent
MAX_PNG_BYTES = 200_000

COLOURS = {
    "red": (210, 40, 40),
    "blue": (40, 90, 210),
    "green": (40, 160, 70),
    "orange": (240, 150, 20),
}
SHAPES = ("circle", "square", "triangle")


def run_plot(out: Path) -> Path:
    config = FakeServerConfig(
        latency=0.04,
        latency_distribution="lognormal",
        latency_sigma=0.6,
        requests_per_minute=60,
        window_seconds=1.0,
        error_rate_5xx=0.03,
        seed=7,
    )
    with FakeOpenAIServer(config) as server:
        llm = ChatOpenAI(
            base_url=server.base_url,
            api_key="sk-fake",  # type: ignore[arg-type]
            model="gpt-4o-mini",
            max_retries=0,
        )
        chain = ChatPromptTemplate.from_template("A tagline for {topic}") | llm | StrOutputParser()
        kit = batchkit(chain, max_concurrency="auto", progress=False)
        results = kit.batch([{"topic": f"product #{k}"} for k in range(240)])
    print(results.summary())
    figure = results.plot()
    path = out / "run.png"
    figure.savefig(path, dpi=80, facecolor="white")
    return _small(path)


def _shape(shape: str, rgb: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (160, 120), (245, 245, 240))
    pen = ImageDraw.Draw(image)
    if shape == "circle":
        pen.ellipse((45, 20, 115, 90), fill=rgb)
    elif shape == "square":
        pen.rectangle((48, 22, 112, 86), fill=rgb)
    else:
        pen.polygon([(80, 14), (126, 96), (34, 96)], fill=rgb)
    return image


def _caption(prompt: str) -> str:
    match = re.search(r"shape_\d+_([a-z]+)_([a-z]+)", prompt)
    if match is None:
        return "An image."
    colour, shape = match.groups()
    article = "An" if colour[0] in "aeiou" else "A"
    return f"{article} {colour} {shape} on a pale grey background."


def grid_picture(out: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="grid-") as tmp:
        folder = Path(tmp)
        sources: list[Path] = []
        for k in range(12):
            colour, shape = list(COLOURS)[k % 4], SHAPES[k % 3]
            path = folder / f"shape_{k:02d}_{colour}_{shape}.png"
            _shape(shape, COLOURS[colour]).save(path)
            sources.append(path)
        (folder / "notes.png").write_text("a text file with an image name")
        sources += [folder / "notes.png", folder / "missing.jpg"]
        config = FakeServerConfig(latency=0.02, response_text=_caption)
        with FakeOpenAIServer(config) as server:
            llm = ChatOpenAI(
                base_url=server.base_url,
                api_key="sk-fake",  # type: ignore[arg-type]
                model="gpt-4o-mini",
                max_retries=0,
            )
            prompt = "Caption this image. (file: {})"
            results = caption_images(
                sources,
                llm=llm,
                prompt=lambda source: prompt.format(Path(source).name),
                progress=False,
            )
        print(results.summary())
        page = results.show(columns=7).save(folder / "grid.html")
        path = out / "grid.png"
        screenshot(page, path, width=1180, height=900)
    return _small(path, crop=True)


def _small(path: Path, *, crop: bool = False) -> Path:
    """Crop white margins (if asked) and keep the PNG under MAX_PNG_BYTES."""
    from PIL import ImageChops

    image = Image.open(path).convert("RGB")
    if crop:
        background = Image.new("RGB", image.size, (255, 255, 255))
        box = ImageChops.difference(image, background).getbbox()
        if box is not None:
            right, bottom = min(image.width, box[2] + 16), min(image.height, box[3] + 16)
            image = image.crop((0, 0, right, bottom))
    image.save(path, optimize=True)
    if path.stat().st_size > MAX_PNG_BYTES:
        image.quantize(colors=128).save(path, optimize=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (run_plot(args.out), grid_picture(args.out)):
        print(f"{path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
