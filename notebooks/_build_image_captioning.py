"""Writes notebooks/image_captioning.ipynb (kept as code so the notebook's source is reviewable)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell(
        "# Captioning a folder of images\n\n"
        "`caption_images` runs an image-caption chain over many images with batchkit: a "
        "progress bar, one result per image, broken files as their own errors (the rest "
        "of the batch runs), and `retry_failed()` for the rows that failed.\n\n"
        "**Without `OPENAI_API_KEY` this notebook talks to a FAKE OpenAI server** started "
        "below on 127.0.0.1: real `ChatOpenAI`, real HTTP, but the captions are echoes of "
        "the prompt, not descriptions. With `OPENAI_API_KEY` set it uses `gpt-4o-mini`."
    ),
    new_markdown_cell(
        "## Some images, and some broken ones\n\n"
        "Twenty small shapes made with Pillow, in PNG, JPEG, WEBP and GIF (one PNG named "
        "`.jpg`: the MIME type is read from the bytes), plus a text file named `.png`, an "
        "empty file and an oversized image. Two more sources are added to the batch: a "
        "file that does not exist and an `ftp:` URL."
    ),
    new_code_cell(
        "import tempfile\n"
        "from pathlib import Path\n\n"
        "from PIL import Image, ImageDraw\n\n"
        "workdir = Path(tempfile.mkdtemp(prefix='captions-'))\n"
        "folder = workdir / 'photos'\n"
        "folder.mkdir()\n\n"
        "colors = {'red': (210, 40, 40), 'blue': (40, 90, 210), 'green': (40, 160, 70),\n"
        "          'orange': (240, 150, 20), 'purple': (130, 50, 170)}\n"
        "shapes = ['circle', 'square', 'triangle', 'bar']\n"
        "suffixes = ['png', 'jpg', 'webp', 'gif']\n\n"
        "def draw(shape, rgb):\n"
        "    image = Image.new('RGB', (64, 48), (245, 245, 240))\n"
        "    pen = ImageDraw.Draw(image)\n"
        "    if shape == 'circle':\n"
        "        pen.ellipse([16, 8, 48, 40], fill=rgb)\n"
        "    elif shape == 'square':\n"
        "        pen.rectangle([18, 10, 46, 38], fill=rgb)\n"
        "    elif shape == 'triangle':\n"
        "        pen.polygon([(32, 6), (54, 42), (10, 42)], fill=rgb)\n"
        "    else:\n"
        "        pen.rectangle([6, 18, 58, 30], fill=rgb)\n"
        "    return image\n\n"
        "for i in range(20):\n"
        "    color, shape = list(colors)[i % 5], shapes[i // 5]\n"
        "    suffix = suffixes[i % 4]\n"
        "    image = draw(shape, colors[color])\n"
        "    if suffix == 'gif':\n"
        "        image = image.convert('P', palette=Image.Palette.ADAPTIVE)\n"
        "    image.save(folder / f'shape_{i:02d}_{color}_{shape}.{suffix}',\n"
        "               format='PNG' if i == 5 else None)  # shape_05 is a PNG named .jpg\n\n"
        "(folder / 'notes.png').write_text('a text file with an image name')\n"
        "(folder / 'empty.jpg').write_bytes(b'')\n"
        "Image.effect_noise((900, 900), 80).save(folder / 'zz_huge_noise.png')\n\n"
        "sources = [folder, workdir / 'missing.png', 'ftp://example.com/cat.png']\n"
        "print(sorted(p.name for p in folder.iterdir()))"
    ),
    new_markdown_cell(
        "## The model\n\n"
        "With no API key, a `FakeOpenAIServer` answers on 127.0.0.1 and validates every "
        "image part as the real API does (a 400 for a bad data URL). Its script fails the "
        "first attempt of three images (a 503, a 500, a 429), so there is something for "
        "`retry_failed()` to fix."
    ),
    new_code_cell(
        "import os\n\n"
        "from langchain_openai import ChatOpenAI\n\n"
        "from langchain_batchkit.testing import FakeOpenAIServer, FakeServerConfig\n\n"
        "FAKE = not os.environ.get('OPENAI_API_KEY')\n"
        "if FAKE:\n"
        "    server = FakeOpenAIServer(FakeServerConfig(\n"
        "        latency=0.05,\n"
        "        script={'shape_03': ('503', 'ok'), 'shape_11': ('500', 'ok'),\n"
        "                'shape_17': ('429', 'ok')},\n"
        "    )).start()\n"
        "    llm = ChatOpenAI(base_url=server.base_url, api_key='sk-fake', model='gpt-4o-mini',\n"
        "                     max_retries=0)\n"
        "    print(f'FAKE OpenAI server at {server.base_url}: captions are echoes, not real')\n"
        "else:\n"
        "    server = None\n"
        "    llm = ChatOpenAI(model='gpt-4o-mini', max_retries=0, max_tokens=60)\n"
        "    print('REAL model: gpt-4o-mini (this costs a few cents)')"
    ),
    new_markdown_cell(
        "## Caption them\n\n"
        "The folder expands to its image files in sorted order (names only: each image "
        "is read and encoded inside its own item, so the bar starts at once). "
        "`retry=None` here so the fake server's failures show up as failed rows; the "
        "default `RetryPolicy()` would retry them on its own. In a notebook we await the "
        "async twin, `acaption_images`; from a script, `caption_images` takes the same "
        "arguments."
    ),
    new_code_cell(
        "from langchain_batchkit.multimodal import acaption_images\n\n"
        "def prompt(source):\n"
        "    return f'Caption this image in one short sentence. (file: {Path(source).name})'\n\n"
        "results = await acaption_images(\n"
        "    sources,\n"
        "    llm=llm,\n"
        "    prompt=prompt,\n"
        "    detail='low',\n"
        "    max_bytes=300_000,\n"
        "    max_concurrency=8,\n"
        "    retry=None,\n"
        ")\n"
        "print(results.summary())\n"
        "results"
    ),
    new_markdown_cell(
        "## The images with their captions\n\n"
        "`results.show()` draws a grid of small thumbnails (at most 128 px a side, a few "
        "KB each) with each caption under its image, and each failed image marked with "
        "its error. It is plain HTML, so it shows on GitHub too; captions and errors are "
        "escaped, never run."
    ),
    new_code_cell("results.show()"),
    new_markdown_cell(
        "## The run, drawn\n\n"
        "`results.plot()`: items finished over time, items in flight against the cap, the "
        "latency histogram and the failures by error type."
    ),
    new_code_cell("results.plot()"),
    new_markdown_cell("The failed rows: the broken sources, and the fake server's three faults."),
    new_code_cell(
        "import pandas as pd\n\n"
        "pd.set_option('display.max_colwidth', 70)\n"
        "frame = results.to_pandas()\n"
        "frame.loc[~frame.ok, ['index', 'input', 'error_type', 'error_message', 'attempts']]"
    ),
    new_markdown_cell(
        "## Re-run only the failed rows\n\n"
        "Every result stays keyed by its index. The transient failures succeed now; the "
        "broken sources fail again, on their own, without a request."
    ),
    new_code_cell(
        "again = await results.aretry_failed()\n"
        "print(again.summary())\n"
        "still_failed = sorted(Path(str(r.input)).name for r in again.failed)\n"
        "print(still_failed)\n"
        "if FAKE:\n"
        "    assert still_failed == ['cat.png', 'empty.jpg', 'missing.png', 'notes.png',\n"
        "                            'zz_huge_noise.png'], still_failed\n"
        "    flaky = next(r for r in again if 'shape_03' in str(r.input))\n"
        "    assert flaky.ok and flaky.attempts == 2 and len(flaky.history) == 1"
    ),
    new_markdown_cell(
        "The oversized image does not have to fail: with Pillow, `max_side` downscales "
        "it (same format, aspect ratio kept) before the size check."
    ),
    new_code_cell(
        "huge = await acaption_images([folder / 'zz_huge_noise.png'], llm=llm,\n"
        "                             max_bytes=300_000, max_side=256, detail='low')\n"
        "huge[0].ok, huge[0].output"
    ),
    new_markdown_cell(
        "## Export\n\n"
        "`to_csv` / `to_jsonl` write one row per image: index, source, caption, ok, "
        "error_type, error_message, attempts."
    ),
    new_code_cell(
        "from langchain_batchkit.multimodal import captions_to_records, to_csv\n\n"
        "csv_path = to_csv(again, workdir / 'captions.csv')\n"
        "print(csv_path)\n"
        "pd.DataFrame(captions_to_records(again)).head(8)"
    ),
    new_code_cell(
        "import shutil\n\nif server is not None:\n    server.stop()\nshutil.rmtree(workdir)"
    ),
]

kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb = new_notebook(cells=cells, metadata={"kernelspec": kernelspec})
nbformat.write(nb, Path(__file__).with_name("image_captioning.ipynb"))
