"""What a person sees: the run's timeline and plot, thumbnails, reprs, the bar, stats."""

from __future__ import annotations

import base64
import builtins
import io
import pickle
import re
from pathlib import Path
from typing import Any

import httpx2
import matplotlib
import openai
import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_openai import ChatOpenAI

from langchain_batchkit import (
    BatchResult,
    ItemError,
    ItemResult,
    LimiterStats,
    RateLimit,
    RetryPolicy,
    batchkit,
)
from langchain_batchkit._display import limiter_stats_html, limiter_stats_text
from langchain_batchkit._introspect import display_name
from langchain_batchkit._plot import PANELS
from langchain_batchkit._progress import ProgressReporter
from langchain_batchkit._timeline import MAX_BINS, Timeline
from langchain_batchkit.multimodal import CaptionResults, caption_images, thumbnail_grid
from langchain_batchkit.multimodal._grid import MAX_THUMBNAIL_BYTES
from langchain_batchkit.testing import FakeChatModel, FakeClock

matplotlib.use("Agg")

Image = pytest.importorskip("PIL.Image")

URL = "http://127.0.0.1:1/v1/chat/completions"


def rate_limited(retry_after: str = "2") -> openai.RateLimitError:
    request = httpx2.Request("POST", URL)
    response = httpx2.Response(429, headers={"retry-after": retry_after}, request=request)
    return openai.RateLimitError("Error code: 429 - slow down", response=response, body=None)


def flaky_service(clock: FakeClock) -> RunnableLambda[int, int]:
    """Each call takes 0.5 s of fake time; every 5th item meets one 429, items
    ending in 3 (mod 7) fail for good with a ValueError."""
    calls: dict[int, int] = {}

    async def call(x: int) -> int:
        await clock.sleep(0.5)
        calls[x] = calls.get(x, 0) + 1
        if x % 5 == 0 and calls[x] == 1:
            raise rate_limited()
        if x % 7 == 3:
            raise ValueError(f"bad input {x}")
        return x

    return RunnableLambda(call)


def fake_time_policy(clock: FakeClock) -> RetryPolicy:
    return RetryPolicy(sleep=clock.sleep, clock=clock, jitter=0.0, seed=0)


@pytest.fixture
async def flaky_run() -> BatchResult[int, int]:
    clock = FakeClock()
    kit = batchkit(
        flaky_service(clock), max_concurrency=4, retry=fake_time_policy(clock), progress=False
    )
    return await kit.abatch(list(range(40)))


# -- timeline -------------------------------------------------------------------------------


async def test_a_run_records_429s_retries_and_failures_on_its_timeline(
    flaky_run: BatchResult[int, int],
) -> None:
    timeline = flaky_run.timeline
    assert timeline is not None
    assert timeline.rate_limited == 8 and timeline.retries == 8
    assert timeline.attempts == sum(r.attempts for r in flaky_run) == 48
    assert (timeline.succeeded, timeline.failed) == (34, 6)
    assert timeline.errors == {"ValueError": 6}
    assert max(b.peak_in_flight for b in timeline.bins()) == 4
    assert {b.cap for b in timeline.bins()} == {4}
    # fake time: 48 calls of 0.5 s, 4 at a time, plus the 2 s Retry-After waits
    assert 6.0 <= timeline.duration <= 12.0


async def test_latency_quantiles_come_from_the_histogram(flaky_run: BatchResult[int, int]) -> None:
    timeline = flaky_run.timeline
    assert timeline is not None
    p50, p95 = timeline.latency_quantile(0.5), timeline.latency_quantile(0.95)
    assert p50 is not None and p95 is not None
    assert p50 == pytest.approx(0.5, rel=0.07)  # one 0.5 s call
    latencies = sorted(r.latency for r in flaky_run)
    assert p95 == pytest.approx(latencies[37], rel=0.13)  # within its bucket, 10**(1/20)
    assert p95 >= 3.0  # a retried item: 0.5 s, the 2 s Retry-After, 0.5 s


def test_the_sync_path_records_the_same_timeline() -> None:
    calls: dict[int, int] = {}

    def call(x: int) -> int:
        calls[x] = calls.get(x, 0) + 1
        if x % 4 == 0 and calls[x] == 1:
            raise rate_limited("0")
        return x

    clock = FakeClock()
    kit = batchkit(
        RunnableLambda(call), max_concurrency=3, retry=fake_time_policy(clock), progress=False
    )
    results = kit.batch(list(range(20)))

    timeline = results.timeline
    assert timeline is not None
    assert (timeline.succeeded, timeline.retries, timeline.rate_limited) == (20, 5, 5)
    assert timeline.attempts == 25


def test_timeline_memory_stays_bounded_on_a_long_run() -> None:
    clock = FakeClock()

    def one_second(x: int) -> int:
        clock.advance(1.0)  # concurrency 1: one thread touches the clock
        return x

    kit = batchkit(RunnableLambda(one_second), max_concurrency=1, retry=None, progress=False)
    kit = kit.with_options(clock=clock)
    report = kit.run(range(20_000))

    timeline = report.timeline
    assert timeline is not None
    assert report.summary.succeeded == timeline.succeeded == 20_000
    assert timeline.n_bins <= MAX_BINS
    assert timeline.width >= 20_000 / MAX_BINS  # bins coarsened as the run grew
    assert timeline.duration == pytest.approx(20_000, abs=1)


def test_two_hundred_thousand_items_fit_in_the_bin_cap() -> None:
    timeline = Timeline(0.0, cap=8)
    done = ItemResult(0, None, "x", latency=0.02)
    for k in range(200_000):
        now = k * 0.01
        timeline.started(now, 1)
        timeline.finished(now + 0.005, 0, done, cap=8)
    timeline.close(2_000.0)

    assert timeline.n_bins <= MAX_BINS
    assert timeline.attempts == timeline.succeeded == 200_000
    assert sum(b.mean_in_flight * b.width for b in timeline.bins()) == pytest.approx(
        1_000, rel=1e-6
    )


def test_a_retried_batch_joins_both_timelines() -> None:
    calls: dict[int, int] = {}

    def call(x: int) -> int:
        calls[x] = calls.get(x, 0) + 1
        if x == 3 and calls[x] == 1:
            raise ValueError("once")
        return x

    kit = batchkit(RunnableLambda(call), retry=None, progress=False)
    first = kit.batch(list(range(10)))
    again = first.retry_failed()

    assert again.timeline is not None
    assert (again.timeline.succeeded, again.timeline.failed) == (10, 1)
    assert again.timeline.errors == {"ValueError": 1}


def test_a_timeline_survives_pickling_with_its_results(flaky_run: BatchResult[int, int]) -> None:
    again = pickle.loads(pickle.dumps(flaky_run))
    assert again.timeline is not None
    assert again.timeline.retries == 8
    assert again.timeline.latency_counts == flaky_run.timeline.latency_counts  # type: ignore[union-attr]


def test_results_pickled_before_timelines_existed_still_plot() -> None:
    results = BatchResult([ItemResult(0, "a", "A", latency=0.1)])
    cls, args, state = results.__reduce__()
    del state["timeline"]
    old = cls(*args)
    old.__dict__.update(state)  # what unpickling such a state does

    assert old.timeline is None
    assert [ax.get_title() for ax in old.plot().axes] == list(PANELS)


# -- plot -----------------------------------------------------------------------------------


async def test_plot_has_the_named_panels_with_429s_and_retries_marked(
    flaky_run: BatchResult[int, int],
) -> None:
    figure = flaky_run.plot()

    assert [ax.get_title() for ax in figure.axes] == list(PANELS)
    _, labels = figure.axes[1].get_legend_handles_labels()
    assert "429s (8)" in labels and "retries (8)" in labels and "cap" in labels
    _, labels = figure.axes[0].get_legend_handles_labels()
    assert any(label.startswith("ideal: 4 in flight") for label in labels)
    assert any("p50" in label for label in figure.axes[2].get_legend_handles_labels()[1])
    bars = [t.get_text() for t in figure.axes[3].get_yticklabels()]
    assert bars == ["ValueError"]
    png = figure._repr_png_()  # type: ignore[attr-defined]
    assert png.startswith(b"\x89PNG")


def test_run_report_plots_too() -> None:
    report = batchkit(RunnableLambda(lambda x: x), progress=False).run(range(30))
    figure = report.plot()
    assert [ax.get_title() for ax in figure.axes] == list(PANELS)


def test_a_result_built_by_hand_still_plots_latency_and_failures() -> None:
    error = ItemError("KeyError", "k")
    results = BatchResult([ItemResult(0, "a", "A", latency=0.1), ItemResult(1, "b", None, error)])
    figure = results.plot()
    assert [t.get_text() for t in figure.axes[3].get_yticklabels()] == ["KeyError"]


def test_plot_without_matplotlib_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib") or (args and args[2] and "_plot" in args[2]):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(__import__("sys").modules, "langchain_batchkit._plot")
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"pip install 'langchain-batchkit\[plot\]'"):
        BatchResult([ItemResult(0, "a", "A")]).plot()


async def test_the_html_repr_embeds_a_small_plot(flaky_run: BatchResult[int, int]) -> None:
    page = flaky_run._repr_html_()
    urls = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(urls) == 1
    png = base64.b64decode(urls[0])
    assert len(png) < 120_000
    assert Image.open(io.BytesIO(png)).size[0] <= 700
    assert "6 failed" in page and page.count("<tr><td>") == 5  # a few failed rows


# -- reprs ----------------------------------------------------------------------------------


def _failed_with_a_long_traceback() -> ItemResult[str, str]:
    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        raise ValueError("token: " + "sk-" + "abcdef1234567890" + " was refused\nsecond line")

    try:
        deep(30)
    except ValueError as exc:
        error = ItemError.from_exception(exc)
    return ItemResult(7, "x" * 5_000, None, error, attempts=3, latency=1.25)


def test_a_failed_item_prints_on_one_short_line() -> None:
    result = _failed_with_a_long_traceback()
    text = repr(result)
    assert "\n" not in text and len(text) < 300
    assert text.startswith("ItemResult(#7 failed, attempts=3, 1.25 s, input='xxx")
    assert "error=ValueError: token: *** was refused second line" in text
    assert "sk-abcdef" not in text and "Traceback" not in text
    assert "deep(n - 1)" in result.error.traceback  # type: ignore[union-attr]


def test_an_item_error_prints_its_type_and_message_only() -> None:
    error = _failed_with_a_long_traceback().error
    assert (
        repr(error) == "ItemError(type='ValueError', message='token: *** was refused second line')"
    )


def test_printing_the_failed_list_shows_one_line_per_item() -> None:
    results = BatchResult([_failed_with_a_long_traceback(), ItemResult(0, "a", "A")])
    assert str(results.failed).count("\n") == 0
    assert repr(results[0]) == "ItemResult(#0 ok, attempts=1, 0.00 s, input='a', output='A')"


# -- thumbnails -----------------------------------------------------------------------------


def _photos(folder: Path, n: int) -> list[Path]:
    paths = []
    for k in range(n):
        image = Image.effect_noise((400, 300), 60 + k).convert("RGB")
        path = folder / f"photo_{k:02d}.jpg"
        image.save(path, quality=95)
        paths.append(path)
    return paths


def test_the_thumbnail_grid_is_bounded_per_image_and_in_all(tmp_path: Path) -> None:
    paths = _photos(tmp_path, 60)
    results = CaptionResults([ItemResult(k, p, f"caption {k}") for k, p in enumerate(paths)])

    grid = results.show(max_items=48, side=128, max_bytes=200_000)

    assert (grid.shown, grid.total) == (48, 60)
    assert "12 more not shown" in grid.html
    pictures = re.findall(r"src='data:image/(?:jpeg|png);base64,([^']+)'", grid.html)
    assert 0 < len(pictures) <= 48
    assert sum(len(p) for p in pictures) <= 200_000
    for data in pictures:
        raw = base64.b64decode(data)
        assert len(raw) <= MAX_THUMBNAIL_BYTES
        assert max(Image.open(io.BytesIO(raw)).size) <= 128
    assert len(grid.html) < 200_000 + 48 * 1_000


def test_captions_and_errors_are_escaped_never_run(tmp_path: Path) -> None:
    (path,) = _photos(tmp_path, 1)
    error = ItemError("ImageSourceError", "<img src=x onerror=alert(1)> is broken")
    results = [
        ItemResult(0, path, "<script>alert('caption')</script> a cat"),
        ItemResult(1, tmp_path / "missing.png", None, error),
    ]

    html = thumbnail_grid(results).html

    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#x27;caption&#x27;)&lt;/script&gt; a cat" in html
    assert "&lt;img src=x onerror=alert(1)&gt; is broken" in html
    assert html.count("<img ") == 1  # the missing file has no picture, only its error
    assert "no preview" in html


def test_a_remote_image_is_never_fetched_for_a_thumbnail() -> None:
    results = [ItemResult(0, "https://example.com/cat.png", "a cat")]
    html = thumbnail_grid(results).html
    assert "<img " not in html and "cat.png" in html


def test_caption_images_results_can_show_themselves(tmp_path: Path) -> None:
    paths = _photos(tmp_path, 3)
    results = caption_images(
        [*paths, tmp_path / "missing.png"], llm=FakeChatModel(), progress=False
    )

    assert isinstance(results, CaptionResults)
    grid = results.show()
    assert grid.shown == 4 and grid.html.count("<img ") == 3
    assert "echo: " in grid.html and "ImageSourceError" in grid.html
    assert isinstance(results.retry_failed(), CaptionResults)


# -- the bar, its label, the limiter's stats ------------------------------------------------


@pytest.mark.parametrize(
    ("ok", "failed", "colour"),
    [(40, 0, "green"), (38, 2, "#ff8c00"), (0, 40, "red")],
)
def test_the_bar_ends_in_a_colour_that_says_whether_items_failed(
    ok: int, failed: int, colour: str
) -> None:
    reporter = ProgressReporter(40, show_bar=True, callback=None)
    bar = reporter._bar
    assert bar is not None
    bar.fp = io.StringIO()  # type: ignore[attr-defined]
    for k in range(ok + failed):
        error = ItemError("ValueError", "x") if k < failed else None
        reporter.item_done(ItemResult(k, k, None if error else k, error))

    reporter.close()

    assert bar.colour == colour


def test_the_default_label_is_the_model_name() -> None:
    llm = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test", max_retries=0)  # type: ignore[arg-type]
    chain = ChatPromptTemplate.from_template("{x}") | llm | StrOutputParser()
    assert chain.get_name() == "RunnableSequence"
    assert display_name(chain) == "gpt-4o-mini"
    assert batchkit(chain).desc == "gpt-4o-mini"


def test_a_run_name_beats_the_model_name() -> None:
    llm = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test", max_retries=0)  # type: ignore[arg-type]
    chain = (ChatPromptTemplate.from_template("{x}") | llm).with_config(run_name="taglines")
    assert display_name(chain) == "taglines"


def test_limiter_stats_read_as_a_sentence_and_a_table() -> None:
    stats = LimiterStats(
        requests=1204,
        waited=87,
        wait_seconds=12.3,
        rate_limited=5,
        pauses=3,
        in_flight=4,
        max_in_flight=16,
        in_flight_cap=12.0,
        lowest_in_flight_cap=6.0,
        paused_seconds=7.5,
    )
    assert limiter_stats_text(stats) == (
        "1,204 requests, 87 waited (0.14 s each, 12.3 s summed); 5 rate-limited (429), "
        "3 pauses (7.5 s of wall time paused); 4 in flight (at most 16), cap 12 (lowest 6)"
    )
    table = limiter_stats_html(stats)
    assert "<table>" in table and "1,204" in table and "6 at lowest" in table
    assert "wall time paused" in table


def test_paused_wall_time_counts_overlapping_pauses_once() -> None:
    clock = FakeClock()
    limit = RateLimit(requests_per_minute=60, clock=clock)
    limit._pause(clock() + 10)  # a 10 s pause
    clock.advance(5)
    limit._pause(clock() + 10)  # extends it by 5 s, overlapping 5 s
    limit._pause(clock() + 2)  # inside the current pause: nothing new
    assert limit.stats().paused_seconds == pytest.approx(15.0)


def test_limiter_stats_can_be_plotted() -> None:
    clock = FakeClock()
    limit = RateLimit(requests_per_minute=60, clock=clock)
    limit._pause(clock() + 3)

    figure = limit.stats().plot()

    assert [ax.get_title() for ax in figure.axes] == ["Requests", "Back-off"]
    assert "paused 3 s" in figure.axes[1].get_xlabel()
