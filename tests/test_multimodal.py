"""Images in, captions out: sources, validation as item errors, expansion, bounded reads,
a 200-image batch over real HTTP with faults, and CSV / JSONL export."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import os
import pickle
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableLambda
from langchain_openai import ChatOpenAI

import langchain_batchkit.multimodal as multimodal
from langchain_batchkit import (
    BatchKitError,
    Budget,
    Checkpoint,
    ConfigurationError,
    ItemResult,
    Price,
    ProgressEvent,
    RateLimit,
    RetryPolicy,
)
from langchain_batchkit._options import OPTION_NAMES, KitOptions
from langchain_batchkit.costs import PriceBook
from langchain_batchkit.multimodal import (
    ImageSource,
    ImageSourceError,
    _sources,
    acaption_images,
    caption_images,
    captions_to_records,
    expand_images,
    image_caption_chain,
    image_key,
    image_message,
    to_csv,
    to_jsonl,
)
from langchain_batchkit.multimodal._chain import _caption_kit
from langchain_batchkit.multimodal._export import CAPTION_COLUMNS
from langchain_batchkit.multimodal._messages import image_part
from langchain_batchkit.multimodal._sources import describe_source, detect_image_mime
from langchain_batchkit.testing import FakeClock, FakeOpenAIServer, FakeServerConfig
from langchain_batchkit.testing.pytest_plugin import FakeServerFactory

SAMPLES = Path(__file__).parent / "data" / "images"
PNG = (SAMPLES / "red_circle.png").read_bytes()
JPEG = (SAMPLES / "blue_square.jpg").read_bytes()
GIF = (SAMPLES / "green_dot.gif").read_bytes()
WEBP = (SAMPLES / "yellow_square.webp").read_bytes()


# -- helpers -----------------------------------------------------------------------------


def image_of(messages: list[BaseMessage]) -> dict[str, Any]:
    content = messages[0].content
    assert isinstance(content, list)
    part = content[1]
    assert isinstance(part, dict) and part["type"] == "image_url"
    image: dict[str, Any] = part["image_url"]
    return image


def text_of(messages: list[BaseMessage]) -> str:
    content = messages[0].content
    assert isinstance(content, list) and isinstance(content[0], dict)
    text: str = content[0]["text"]
    return text


def mime_of(url: str) -> str:
    return url.split(";", 1)[0].removeprefix("data:") if url.startswith("data:") else "url"


def decoded(url: str) -> bytes:
    return base64.b64decode(url.split(",", 1)[1])


def describing_model() -> RunnableLambda[list[BaseMessage], str]:
    """A chat model stand-in that answers with the MIME type and detail it was sent."""

    def answer(messages: list[BaseMessage]) -> str:
        image = image_of(messages)
        return f"{mime_of(image['url'])} detail={image.get('detail')}"

    return RunnableLambda(answer)


def chat(server: FakeOpenAIServer) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.base_url,
        api_key="sk-test",  # type: ignore[arg-type]
        model="gpt-4o-mini",
        max_retries=0,
        timeout=5.0,
    )


# -- each source kind ----------------------------------------------------------------------


def test_an_http_url_is_sent_as_a_url_part_without_being_fetched() -> None:
    part = image_part("https://example.com/cat.png")

    assert part == {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}


def test_a_str_path_is_sent_as_a_base64_data_url() -> None:
    url = image_part(str(SAMPLES / "blue_square.jpg"))["image_url"]["url"]

    assert url.startswith("data:image/jpeg;base64,")
    assert decoded(url) == JPEG


def test_a_pathlib_path_is_sent_as_a_base64_data_url() -> None:
    url = image_part(SAMPLES / "red_circle.png")["image_url"]["url"]

    assert url.startswith("data:image/png;base64,") and decoded(url) == PNG


@pytest.mark.parametrize(
    ("data", "mime"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp")],
    ids=["png", "jpeg", "gif", "webp"],
)
def test_bytes_are_sent_with_the_mime_type_of_their_magic_numbers(data: bytes, mime: str) -> None:
    url = image_part(data)["image_url"]["url"]

    assert detect_image_mime(data) == mime
    assert url == f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_a_png_saved_as_jpg_is_sent_as_png() -> None:
    url = image_part(SAMPLES / "png_named.jpg")["image_url"]["url"]

    assert url.startswith("data:image/png;base64,")


def test_a_data_url_is_checked_and_typed_from_its_bytes() -> None:
    mislabelled = f"data:image/jpeg;base64,{base64.b64encode(PNG).decode()}"

    url = image_part(mislabelled)["image_url"]["url"]

    assert url.startswith("data:image/png;base64,") and decoded(url) == PNG


def test_a_pil_image_is_sent_as_png() -> None:
    image_module = pytest.importorskip("PIL.Image")
    image = image_module.new("RGB", (8, 6), (10, 200, 30))

    url = image_part(image)["image_url"]["url"]

    assert url.startswith("data:image/png;base64,")
    assert describe_source(image) == "<PIL image 8x6 RGB>"


def test_max_side_downscales_a_pil_image_and_leaves_the_callers_image_alone() -> None:
    image_module = pytest.importorskip("PIL.Image")
    image = image_module.new("RGB", (120, 30), (200, 10, 10))

    url = image_part(image, max_side=40)["image_url"]["url"]

    with image_module.open(io.BytesIO(decoded(url))) as sent:
        assert sent.size == (40, 10)
    assert image.size == (120, 30)


def test_max_side_downscales_an_oversized_file_instead_of_failing_it(tmp_path: Path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    noisy = tmp_path / "noisy.png"
    image_module.effect_noise((200, 150), 64).save(noisy)  # noise: barely compressible
    with pytest.raises(ImageSourceError, match="over the limit"):
        image_part(noisy, max_bytes=10_000)

    url = image_part(noisy, max_bytes=10_000, max_side=40)["image_url"]["url"]

    assert url.startswith("data:image/png;base64,")
    with image_module.open(io.BytesIO(decoded(url))) as sent:
        assert sent.size == (40, 30)


def test_max_side_without_pillow_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import Image` fail

    with pytest.raises(ImportError, match=r"pip install 'langchain-batchkit\[images\]'"):
        caption_images([PNG], llm=describing_model(), max_side=512)


# -- messages, detail and prompt ------------------------------------------------------------


def test_image_message_is_one_human_message_with_the_text_then_the_image() -> None:
    messages = image_message(SAMPLES / "red_circle.png", "What shape is this?")

    assert [m.type for m in messages] == ["human"]
    assert text_of(messages) == "What shape is this?"
    assert image_of(messages)["url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("detail", ["low", "high", "auto"])
async def test_detail_is_passed_through_to_the_model(detail: Any) -> None:
    chain = image_caption_chain(describing_model(), detail=detail)

    assert await chain.ainvoke(PNG) == f"image/png detail={detail}"


def test_detail_is_left_out_when_not_given() -> None:
    assert "detail" not in image_part(PNG)["image_url"]


def test_a_bad_detail_is_refused_before_any_item_runs() -> None:
    with pytest.raises(ConfigurationError, match="detail"):
        caption_images([PNG], llm=describing_model(), detail="ultra")  # type: ignore[arg-type]


@pytest.mark.parametrize(("option", "value"), [("max_bytes", 0), ("max_side", -1)])
def test_a_bad_size_limit_is_refused_before_any_item_runs(option: str, value: int) -> None:
    options: dict[str, Any] = {option: value}

    with pytest.raises(ConfigurationError, match=option):
        image_caption_chain(describing_model(), **options)


def test_a_prompt_function_receives_the_source_description() -> None:
    def asked(messages: list[BaseMessage]) -> str:
        return text_of(messages)

    results = caption_images(
        [PNG, "https://example.com/a.png"],
        llm=RunnableLambda(asked),
        prompt=lambda source: f"Caption {source}",
        progress=False,
    )

    assert results.outputs == ["Caption <bytes 122>", "Caption https://example.com/a.png"]


# -- validation: each broken source is its own item's error ---------------------------------


def _broken_sources(tmp: Path) -> dict[str, tuple[ImageSource, str]]:
    """id -> (a broken source, a fragment of the cause its error must name)."""
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "big.png").write_bytes(PNG + b"\0" * 4000)
    (tmp / "no_images").mkdir()
    (tmp / "no_images" / "notes.txt").write_text("hello")
    return {
        "missing file": (str(tmp / "missing.jpg"), "no such file"),
        "not an image": (str(SAMPLES / "not_an_image.png"), "is not a PNG, JPEG, GIF or WEBP"),
        "empty file": (tmp / "empty.png", "is empty"),
        "too large": (str(tmp / "big.png"), "over the limit of max_bytes=2,000"),
        "ftp url": ("ftp://example.com/cat.png", "unsupported URL scheme 'ftp:'"),
        "file url": ("file:///etc/cat.png", "unsupported URL scheme 'file:'"),
        "url without host": ("https:///cat.png", "has no host"),
        "bad base64": ("data:image/png;base64,@@@not-base64", "not valid base64"),
        "not base64": ("data:image/png,rawtext", "not base64-encoded"),
        "folder without images": (str(tmp / "no_images"), "is a folder with no image files"),
        "pattern matching nothing": (str(tmp / "*.webp"), "matches this pattern"),
        "bytes that are not an image": (b"GIF88a-nope", "is not a PNG, JPEG, GIF or WEBP"),
        "unsupported type": (12345, "unsupported image source of type int"),  # type: ignore[dict-item]
    }


BROKEN_IDS = [
    "missing file",
    "not an image",
    "empty file",
    "too large",
    "ftp url",
    "file url",
    "url without host",
    "bad base64",
    "not base64",
    "folder without images",
    "pattern matching nothing",
    "bytes that are not an image",
    "unsupported type",
]


@pytest.mark.parametrize("broken", BROKEN_IDS)
async def test_a_broken_source_fails_only_its_own_item_with_a_clear_error(
    broken: str, tmp_path: Path
) -> None:
    source, cause = _broken_sources(tmp_path)[broken]

    results = await acaption_images(
        [PNG, source, SAMPLES / "blue_square.jpg"],
        llm=describing_model(),
        max_bytes=2000,
        progress=False,
    )

    assert results.outputs[0] == "image/png detail=None"
    assert results.outputs[2] == "image/jpeg detail=None"
    error = results[1].error
    assert error is not None and error.type == "ImageSourceError"
    assert error.message.startswith(describe_source(source) + ": ")
    assert cause in error.message
    assert results[1].attempts == 1  # a broken source is never retried


def test_image_source_error_is_a_batchkit_value_error_that_pickles() -> None:
    with pytest.raises(ImageSourceError) as caught:
        image_message("photos/nope.jpg")

    error = caught.value
    assert isinstance(error, BatchKitError) and isinstance(error, ValueError)
    assert (error.source, error.reason) == ("photos/nope.jpg", "no such file")
    assert str(pickle.loads(pickle.dumps(error))) == "photos/nope.jpg: no such file"


def test_an_oversized_file_is_refused_without_being_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(PNG + b"\0" * 5000)

    def never(path: Path) -> bytes:
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr(_sources, "_read_file", never)

    with pytest.raises(ImageSourceError, match="over the limit"):
        image_part(big, max_bytes=1000)


# -- folders and globs ----------------------------------------------------------------------


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for name in ("b.jpg", "a.png", "C.WEBP", "d.gif", ".hidden.png", "nested/e.png"):
        (folder / name).write_bytes(PNG)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_a_folder_expands_to_its_image_files_sorted_by_name(photo_folder: Path) -> None:
    expanded = expand_images(str(photo_folder))

    names = [Path(p).name for p in expanded]  # type: ignore[arg-type]
    assert names == ["C.WEBP", "a.png", "b.jpg", "d.gif"]  # no .txt, hidden or nested files
    assert expand_images(photo_folder) == [photo_folder / n for n in names]  # Path in, Path out


def test_a_glob_pattern_expands_to_its_matches_sorted(photo_folder: Path) -> None:
    assert expand_images(f"{photo_folder}/**/*.png") == [
        f"{photo_folder}/a.png",
        f"{photo_folder}/nested/e.png",
    ]


def test_expansion_keeps_the_given_order_and_passes_other_sources_through(
    photo_folder: Path,
) -> None:
    url = "https://example.com/z.png"

    expanded = expand_images([url, f"{photo_folder}/*.gif", PNG, f"{photo_folder}/[ab].*"])

    assert expanded == [
        url,
        f"{photo_folder}/d.gif",
        PNG,
        f"{photo_folder}/a.png",
        f"{photo_folder}/b.jpg",
    ]


def test_caption_images_captions_a_folder_in_sorted_order(photo_folder: Path) -> None:
    results = caption_images(str(photo_folder), llm=describing_model(), progress=False)

    assert [Path(str(r.input)).name for r in results] == ["C.WEBP", "a.png", "b.jpg", "d.gif"]
    assert all(r.ok for r in results)


# -- encoding is bounded: each file is read inside its own item -----------------------------


async def test_a_file_is_read_only_when_its_item_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for path in paths:
        path.write_bytes(PNG)
    reads: list[str] = []
    read_file = _sources._read_file

    def counting(path: Path) -> bytes:
        reads.append(path.name)
        return read_file(path)

    monkeypatch.setattr(_sources, "_read_file", counting)
    two_held, release = asyncio.Event(), asyncio.Event()
    held = 0

    async def held_model(messages: list[BaseMessage]) -> str:
        nonlocal held
        held += 1
        if held == 2:
            two_held.set()
        await release.wait()
        return mime_of(image_of(messages)["url"])

    run = asyncio.create_task(
        acaption_images(paths, llm=RunnableLambda(held_model), max_concurrency=2, progress=False)
    )
    await asyncio.wait_for(two_held.wait(), timeout=10)

    assert reads == ["0.png", "1.png"]  # the third file is not read while two items are held
    paths[2].write_bytes(JPEG)  # so what it holds when its item starts is what gets sent
    release.set()
    results = await run

    assert results.outputs == ["image/png", "image/png", "image/jpeg"]
    assert reads == ["0.png", "1.png", "2.png"]


async def test_under_ainvoke_a_large_file_is_read_off_the_event_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    large = tmp_path / "large.png"
    large.write_bytes(PNG + b"\0" * (_sources.INLINE_MAX_BYTES + 1))
    threads: list[int] = []
    read_file = _sources._read_file

    def recording(path: Path) -> bytes:
        threads.append(threading.get_ident())
        return read_file(path)

    monkeypatch.setattr(_sources, "_read_file", recording)

    await image_caption_chain(describing_model()).ainvoke(large)

    assert threads and threads[0] != threading.get_ident()


# -- 200 images over real HTTP, with server faults and broken sources ---------------------


def _two_hundred_sources(tmp: Path) -> tuple[list[ImageSource], set[int]]:
    kinds = [PNG, JPEG, GIF, WEBP]
    sources: list[ImageSource] = []
    broken: set[int] = set()
    (tmp / "text.png").write_text("not an image")
    (tmp / "big.jpg").write_bytes(JPEG + b"\0" * 3000)
    bad: dict[int, ImageSource] = {
        13: str(tmp / "missing.png"),
        57: str(tmp / "text.png"),
        101: "ftp://example.com/x.png",
        149: tmp / "big.jpg",
        188: b"not an image",
    }
    for i in range(200):
        if i in bad:
            sources.append(bad[i])
            broken.add(i)
        elif i % 50 == 7:
            sources.append(f"https://images.example.com/{i}.png")
        elif i % 3 == 0:
            sources.append(kinds[i % 4] + b"\0" * i)  # padded: each "<bytes N>" is unique
        else:
            path = tmp / f"img_{i:03d}.{'jpg' if i % 2 else 'png'}"  # names lie on purpose
            path.write_bytes(kinds[i % 4])
            sources.append(path if i % 5 else str(path))
    return sources, broken


async def test_two_hundred_images_over_http_each_gets_its_own_caption_or_error(
    fake_openai_server_factory: FakeServerFactory, tmp_path: Path
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(error_rate_5xx=0.1, seed=7))
    clock = FakeClock()
    sources, broken = _two_hundred_sources(tmp_path)

    results = await acaption_images(
        sources,
        llm=chat(server),
        prompt=lambda source: f"Caption {source}",
        detail="low",
        max_bytes=2000,
        max_concurrency=16,
        retry=RetryPolicy(max_attempts=8, sleep=clock.sleep, clock=clock, seed=0),
        progress=False,
    )

    assert len(results) == 200 and [r.index for r in results] == list(range(200))
    for i, (source, result) in enumerate(zip(sources, results, strict=True)):
        assert result.input is source
        if i in broken:
            assert result.error is not None and result.error.type == "ImageSourceError", i
            assert describe_source(source) in result.error.message
            assert result.attempts == 1
        else:
            assert result.output == f"echo: Caption {describe_source(source)}", i
    stats = server.stats()
    assert sum(r.attempts > 1 for r in results) > 0  # server faults were met and retried
    assert len(stats.answers_per_prompt) == 200 - len(broken)  # one answer per good image
    assert all(n == 1 for n in stats.answers_per_prompt.values())
    assert stats.responses_by_status.get(400, 0) == 0  # every image sent was accepted


def test_caption_images_runs_over_http_from_sync_code(fake_openai_server: FakeOpenAIServer) -> None:
    results = caption_images(
        [SAMPLES / "png_named.jpg", SAMPLES / "green_dot.gif", "ftp://x/y.png"],
        llm=chat(fake_openai_server),
        progress=False,
    )

    assert results.outputs[:2] == ["echo: Caption this image."] * 2
    assert [r.index for r in results.failed] == [2]
    assert fake_openai_server.stats().images_seen == 2


def test_retry_failed_from_sync_code_reaches_the_model_again(
    fake_openai_server_factory: FakeServerFactory,
) -> None:
    server = fake_openai_server_factory(FakeServerConfig(script={"red_circle": ("503", "ok")}))
    results = caption_images(
        [SAMPLES / "red_circle.png"],
        llm=chat(server),
        prompt=lambda source: f"Caption {source}",
        retry=None,
        progress=False,
    )
    assert results[0].error is not None and results[0].error.type == "OpenAIAPIError"

    again = results.retry_failed()

    assert again[0].error is None, again[0].error


# -- every batchkit option, a checkpoint included ----------------------------------------


def caption_prompt(source: str) -> str:
    return f"Caption {source}"


class CountingCaptioner:
    """A chat model stand-in: counts its calls; a name in ``fail_once`` fails its first."""

    def __init__(self, fail_once: tuple[str, ...] = ()) -> None:
        self.calls: list[str] = []
        self.fail_once = set(fail_once)

    def __call__(self, messages: list[BaseMessage]) -> str:
        name = Path(text_of(messages).removeprefix("Caption ")).name
        self.calls.append(name)
        if name in self.fail_once:
            self.fail_once.discard(name)
            raise RuntimeError(f"the model failed on {name}")
        return f"caption of {name}"


def _folder_of(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(PNG)
    return folder


def test_caption_images_resumes_from_a_checkpoint_without_calling_the_model_again(
    tmp_path: Path,
) -> None:
    folder = _folder_of(tmp_path, "a.png", "b.png", "c.png")
    model = CountingCaptioner(fail_once=("b.png",))
    options: dict[str, Any] = {"checkpoint": tmp_path / "captions.sqlite", "progress": False}
    llm = RunnableLambda(model)

    first = caption_images(str(folder), llm=llm, prompt=caption_prompt, **options)
    again = caption_images(str(folder), llm=llm, prompt=caption_prompt, **options)
    retried = caption_images(
        str(folder), llm=llm, prompt=caption_prompt, retry_failed=True, **options
    )

    assert first.outputs == ["caption of a.png", None, "caption of c.png"]
    assert [r.key for r in first] == [str(folder / n) for n in ("a.png", "b.png", "c.png")]
    assert again.outputs == first.outputs  # returned as stored, failure included
    assert retried.outputs == ["caption of a.png", "caption of b.png", "caption of c.png"]
    assert sorted(model.calls) == ["a.png", "b.png", "b.png", "c.png"]  # b once more, only b


async def test_acaption_images_resumes_each_file_by_name_when_the_folder_changed(
    tmp_path: Path,
) -> None:
    folder = _folder_of(tmp_path, "a.png", "c.png")
    model = CountingCaptioner()
    llm = RunnableLambda(model)
    checkpoint = tmp_path / "captions.sqlite"

    await acaption_images(
        str(folder), llm=llm, prompt=caption_prompt, checkpoint=checkpoint, progress=False
    )
    _folder_of(tmp_path, "b.png")  # a new file sorts between the two captioned ones
    results = await acaption_images(
        str(folder), llm=llm, prompt=caption_prompt, checkpoint=checkpoint, progress=False
    )

    assert results.outputs == ["caption of a.png", "caption of b.png", "caption of c.png"]
    assert sorted(model.calls) == ["a.png", "b.png", "c.png"]  # only the new file was captioned


def test_caption_images_checkpoints_a_folder_with_a_non_utf8_file_name(tmp_path: Path) -> None:
    folder = _folder_of(tmp_path, "a.png")
    try:
        (Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.png"))).write_bytes(PNG)
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take non-UTF-8 names")
    model = CountingCaptioner()
    options: dict[str, Any] = {"checkpoint": tmp_path / "captions.sqlite", "progress": False}

    first = caption_images(str(folder), llm=RunnableLambda(model), prompt=caption_prompt, **options)
    again = caption_images(str(folder), llm=RunnableLambda(model), prompt=caption_prompt, **options)

    assert first.outputs == again.outputs == ["caption of a.png", "caption of caf\udce9.png"]
    assert again[1].input == first[1].input
    assert len(model.calls) == 2


def test_caption_images_resumes_path_sources_as_paths(tmp_path: Path) -> None:
    folder = _folder_of(tmp_path, "a.png")
    options: dict[str, Any] = {"checkpoint": tmp_path / "captions.sqlite", "progress": False}
    llm = RunnableLambda(CountingCaptioner())

    first = caption_images(folder, llm=llm, prompt=caption_prompt, **options)
    again = caption_images(folder, llm=llm, prompt=caption_prompt, **options)

    assert first[0].input == again[0].input == folder / "a.png"
    assert captions_to_records(again)[0].source == str(folder / "a.png")


def test_caption_images_takes_a_key_function(tmp_path: Path) -> None:
    folder = _folder_of(tmp_path, "a.png", "b.png")

    results = caption_images(
        str(folder),
        llm=RunnableLambda(CountingCaptioner()),
        prompt=caption_prompt,
        checkpoint=tmp_path / "captions.sqlite",
        key=lambda source: Path(source).stem,
        progress=False,
    )

    assert [r.key for r in results] == ["a", "b"]


def test_caption_images_refuses_a_misspelt_option_by_name() -> None:
    with pytest.raises(ConfigurationError, match="max_concurency"):
        caption_images([PNG], llm=describing_model(), max_concurency=4)


def test_caption_images_refuses_a_key_without_a_checkpoint() -> None:
    with pytest.raises(ConfigurationError, match="checkpoint"):
        caption_images([PNG], llm=describing_model(), key=image_key)


def test_caption_images_passes_every_kit_option_to_its_kit(tmp_path: Path) -> None:
    def on_progress(event: ProgressEvent) -> None:
        pass

    def key(source: Any) -> str:
        return str(source)

    clock = FakeClock()
    options: dict[str, Any] = {
        "max_concurrency": 3,
        "retry": RetryPolicy(max_attempts=5, sleep=clock.sleep, clock=clock),
        "rate_limit": RateLimit(max_in_flight=2),
        "checkpoint": Checkpoint(tmp_path / "c.sqlite"),
        "key": key,
        "retry_failed": True,
        "progress": False,
        "on_progress": on_progress,
        "desc": "my captions",
        "clock": clock,
        "budget": Budget(usd=1.0),
        "prices": PriceBook({"m": Price(1.0, 1.0)}),
        "flex": True,
        "flex_deadline": 30.0,
        "reask": None,
    }
    assert set(options) == OPTION_NAMES  # a new option needs a value here

    kit, _ = _caption_kit([PNG], describing_model(), "Caption.", None, 1000, None, options)

    assert kit.options == KitOptions(**options)


def test_caption_images_defaults_differ_from_batchkit_only_in_label_and_key(
    tmp_path: Path,
) -> None:
    kit, _ = _caption_kit([PNG], describing_model(), "Caption.", None, 1000, None, {})
    stored, _ = _caption_kit(
        [PNG], describing_model(), "Caption.", None, 1000, None, {"checkpoint": tmp_path / "c"}
    )

    assert kit.options == KitOptions(desc="captions")
    assert stored.options.key is image_key


def test_image_key_is_the_path_or_url_or_a_hash_of_the_data() -> None:
    url = f"data:image/png;base64,{base64.b64encode(PNG).decode()}"

    assert image_key("photos/cat.jpg") == "photos/cat.jpg"
    assert image_key(Path("photos") / "cat.jpg") == "photos/cat.jpg"
    assert image_key("https://example.com/a.png") == "https://example.com/a.png"
    assert image_key(PNG) == image_key(bytearray(PNG)) != image_key(JPEG)
    assert image_key(PNG).startswith("sha256:") and image_key(url).startswith("sha256:")
    assert image_key(url) == image_key(url[:]) != image_key(PNG)


def test_image_key_of_a_non_utf8_file_name_can_be_stored_as_utf8() -> None:
    key = image_key("photos/caf\udce9.jpg")

    assert key == "photos/caf\\udce9.jpg"
    assert key.encode("utf-8")  # SQLite stores keys as UTF-8


def test_image_key_of_a_pil_image_follows_its_pixels() -> None:
    pil = pytest.importorskip("PIL.Image")
    red, also_red, blue = (pil.new("RGB", (4, 4), c) for c in ("red", "red", "blue"))

    assert image_key(red) == image_key(also_red) != image_key(blue)
    assert image_key(red) != image_key(red.convert("RGBA"))


# -- records and export -----------------------------------------------------------------


@pytest.fixture
def mixed_results() -> list[ItemResult[ImageSource, str]]:
    return caption_images(
        ["https://example.com/a,b.png", PNG, "missing.png"],
        llm=RunnableLambda(lambda _: 'A "red", round\nthing'),
        progress=False,
    )


def test_records_name_each_source_briefly_with_its_caption_or_error(
    mixed_results: list[ItemResult[ImageSource, str]],
) -> None:
    records = captions_to_records(mixed_results)

    assert [r.source for r in records] == [
        "https://example.com/a,b.png",
        "<bytes 122>",
        "missing.png",
    ]
    assert [r.ok for r in records] == [True, True, False]
    assert records[0].caption == 'A "red", round\nthing'
    assert (records[2].caption, records[2].error_type) == (None, "ImageSourceError")
    assert records[2].error_message == "missing.png: no such file"
    assert tuple(records[2].as_dict()) == CAPTION_COLUMNS


def test_data_url_sources_are_described_without_their_data() -> None:
    url = f"data:image/png;base64,{base64.b64encode(PNG).decode()}"

    assert describe_source(url) == f"<data URL image/png, {len(url)} chars>"


def test_to_csv_writes_a_header_and_one_row_per_image(
    mixed_results: list[ItemResult[ImageSource, str]], tmp_path: Path
) -> None:
    path = to_csv(mixed_results, tmp_path / "captions.csv")

    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CAPTION_COLUMNS
    assert rows[1] == [
        "0",
        "https://example.com/a,b.png",
        'A "red", round\nthing',
        "True",
        "",
        "",
        "1",
    ]
    assert rows[3] == [
        "2",
        "missing.png",
        "",
        "False",
        "ImageSourceError",
        "missing.png: no such file",
        "1",
    ]


def test_to_jsonl_streams_one_object_per_result_as_they_come(
    mixed_results: list[ItemResult[ImageSource, str]], tmp_path: Path
) -> None:
    pulled: list[int] = []

    def one_by_one() -> Iterator[ItemResult[ImageSource, str]]:
        for result in mixed_results:
            pulled.append(result.index)
            yield result

    path = to_jsonl(one_by_one(), tmp_path / "captions.jsonl")

    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert pulled == [0, 1, 2]
    assert [tuple(obj) for obj in lines] == [CAPTION_COLUMNS] * 3
    assert lines[1]["source"] == "<bytes 122>" and lines[1]["ok"] is True
    assert lines[2]["caption"] is None and lines[2]["error_type"] == "ImageSourceError"


# -- exports of names that are not UTF-8, written atomically ---------------------------------

NON_UTF8_NAME = "caf\udce9.jpg"  # what os.listdir gives for the bytes b"caf\xe9.jpg"


def _captioned(*pairs: tuple[Any, str | None]) -> list[ItemResult[Any, str]]:
    return [ItemResult(i, source, caption) for i, (source, caption) in enumerate(pairs)]


def test_to_csv_writes_a_non_utf8_file_name_as_its_original_bytes(tmp_path: Path) -> None:
    path = to_csv(_captioned((NON_UTF8_NAME, "a café")), tmp_path / "captions.csv")

    assert b"caf\xe9.jpg" in path.read_bytes()  # the name's own bytes
    assert "a café".encode() in path.read_bytes()  # everything else is UTF-8
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.reader(f))
    assert rows[1][1] == NON_UTF8_NAME
    assert os.fsencode(rows[1][1]) == b"caf\xe9.jpg"


def test_to_jsonl_escapes_a_non_utf8_file_name_so_its_bytes_can_be_recovered(
    tmp_path: Path,
) -> None:
    path = to_jsonl(_captioned((NON_UTF8_NAME, "a café")), tmp_path / "captions.jsonl")

    text = path.read_bytes().decode("utf-8")  # still valid UTF-8
    assert "\\udce9" in text and "a café" in text
    record = json.loads(text)
    assert record["source"] == NON_UTF8_NAME
    assert os.fsencode(record["source"]) == b"caf\xe9.jpg"


def test_a_lone_surrogate_that_is_no_file_byte_is_escaped_in_both_exports(
    tmp_path: Path,
) -> None:
    results = _captioned(("a.png", "half an emoji \ud83d"))

    csv_path = to_csv(results, tmp_path / "captions.csv")
    jsonl_path = to_jsonl(results, tmp_path / "captions.jsonl")

    with csv_path.open(newline="", encoding="utf-8") as f:
        assert list(csv.reader(f))[1][2] == "half an emoji \\ud83d"
    assert json.loads(jsonl_path.read_text(encoding="utf-8"))["caption"] == "half an emoji \ud83d"


def test_a_folder_with_a_non_utf8_file_name_exports_a_name_that_opens_the_file(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    try:
        fd = os.open(os.fsencode(folder) + b"/caf\xe9.png", os.O_WRONLY | os.O_CREAT)
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take non-UTF-8 names")
    os.write(fd, PNG)
    os.close(fd)

    results = caption_images(str(folder), llm=describing_model(), progress=False)
    csv_path = to_csv(results, tmp_path / "captions.csv")
    jsonl_path = to_jsonl(results, tmp_path / "captions.jsonl")

    assert results.outputs == ["image/png detail=None"]
    with csv_path.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        from_csv = list(csv.reader(f))[1][1]
    from_jsonl = json.loads(jsonl_path.read_text(encoding="utf-8"))["source"]
    for name in (from_csv, from_jsonl):
        assert Path(name).read_bytes() == PNG
        assert os.fsencode(name).endswith(b"/caf\xe9.png")


class _ExportCrash(Exception):
    pass


def _crashing_after_one_row() -> Iterator[ItemResult[Any, str]]:
    yield ItemResult(0, "a.png", "first")
    raise _ExportCrash


@pytest.mark.parametrize("export", [to_csv, to_jsonl])
def test_an_export_that_fails_midway_leaves_the_old_file_and_no_half_file(
    export: Any, tmp_path: Path
) -> None:
    path = tmp_path / "captions.out"
    path.write_text("the previous export\n", encoding="utf-8")

    with pytest.raises(_ExportCrash):
        export(_crashing_after_one_row(), path)

    assert path.read_text(encoding="utf-8") == "the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.out"]  # no temp file left


@pytest.mark.parametrize("export", [to_csv, to_jsonl])
def test_an_interrupted_export_leaves_no_file_at_all(export: Any, tmp_path: Path) -> None:
    def interrupted() -> Iterator[ItemResult[Any, str]]:
        yield ItemResult(0, "a.png", "first")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export(interrupted(), tmp_path / "captions.out")

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("export", [to_csv, to_jsonl])
def test_an_export_replaces_the_file_only_when_complete(export: Any, tmp_path: Path) -> None:
    path = tmp_path / "captions.out"
    path.write_text("the previous export\n", encoding="utf-8")
    seen: list[str] = []

    def watching() -> Iterator[ItemResult[Any, str]]:
        for i in range(3):
            seen.append(path.read_text(encoding="utf-8"))  # what a reader sees meanwhile
            yield ItemResult(i, f"{i}.png", f"caption {i}")

    export(watching(), path)

    assert seen == ["the previous export\n"] * 3
    assert "caption 2" in path.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["captions.out"]


# -- public surface -------------------------------------------------------------------------


def test_multimodal_public_surface_is_sorted_exported_and_exactly_this() -> None:
    names = multimodal.__all__
    assert names == sorted(
        names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)
    )
    assert all(hasattr(multimodal, name) for name in names)
    assert set(names) == {
        "DEFAULT_PROMPT",
        "CaptionRecord",
        "CaptionResults",
        "ImageSource",
        "ImageSourceError",
        "ThumbnailGrid",
        "acaption_images",
        "caption_images",
        "captions_to_records",
        "expand_images",
        "image_caption_chain",
        "image_key",
        "image_message",
        "thumbnail_grid",
        "to_csv",
        "to_jsonl",
    }
