"""One attempt of one item, through the chain's sync or async path; and one whole item.

Both paths do the same: open the kit's own run for the item on its first attempt
(only when a handler watches), call the chain with a child config tagged with the
attempt, hand the outcome to :meth:`RunPlan.settle`, and report the verdict to the
item's run (its end, or a retry). What to report is decided once
(:func:`_start_fields`, :func:`_closing_event`); the two paths only differ in
calling and awaiting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    patch_config,
)

from langchain_batchkit._attempts import ItemRun, RunPlan
from langchain_batchkit._errors import exception_traceback
from langchain_batchkit._item import ItemResult

__all__ = ["Verdict", "invoke_async", "invoke_sync", "step_async", "step_sync"]

logger = logging.getLogger(__name__)

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")

#: What an attempt ends with: the item's result, or seconds to wait before the next.
Verdict = ItemResult[InputT, OutputT] | float


def step_sync(plan: RunPlan[InputT, OutputT], item: ItemRun[InputT, OutputT]) -> Verdict[Any, Any]:
    """Run one attempt of ``item`` through the chain's sync path (in a worker thread)."""
    config = item.begin_attempt(plan.clock(), plan.prices)
    if plan.observed:
        if item.run_manager is None:
            manager = get_callback_manager_for_config(config)
            fields = _start_fields(plan, config)
            item.run_manager = _guard(manager.on_chain_start, None, item.value, **fields)
        config = _child_config(item, config)
    output: OutputT | None = None
    error: Exception | None = None
    try:
        output = plan.runnable_for(item).invoke(item.value, config, **plan.kwargs)
    except Exception as exc:
        error = exc
    manager = item.run_manager
    try:
        verdict = plan.settle(item, output, error, sync=True)
    except BaseException as stop:
        if manager is not None:
            _guard(manager.on_chain_error, stop)
        raise
    event = _closing_event(manager, item, verdict)
    if event is not None:
        _guard(*event)
    return verdict


async def step_async(
    plan: RunPlan[InputT, OutputT], item: ItemRun[InputT, OutputT]
) -> Verdict[InputT, OutputT]:
    """Run one attempt of ``item`` through the chain's async path (a task on the caller's loop)."""
    config = item.begin_attempt(plan.clock(), plan.prices)
    if plan.observed:
        if item.run_manager is None:
            manager = get_async_callback_manager_for_config(config)
            fields = _start_fields(plan, config)
            item.run_manager = await _aguard(manager.on_chain_start, None, item.value, **fields)
        config = _child_config(item, config)
    output: OutputT | None = None
    error: Exception | None = None
    try:
        output = await plan.runnable_for(item).ainvoke(item.value, config, **plan.kwargs)
    except Exception as exc:
        error = exc
    manager = item.run_manager
    try:
        verdict = plan.settle(item, output, error, sync=False)
    except BaseException as stop:
        if manager is not None:
            await _aguard(manager.on_chain_error, stop)
        raise
    event = _closing_event(manager, item, verdict)
    if event is not None:
        await _aguard(*event)
    return verdict


def _start_fields(plan: RunPlan[Any, Any], config: RunnableConfig) -> dict[str, Any]:
    """The keywords of the kit's own run for an item: the caller's run id and name."""
    return {"run_id": config.get("run_id"), "name": config.get("run_name") or plan.name}


def _closing_event(
    manager: Any, item: ItemRun[Any, Any], verdict: Verdict[Any, Any]
) -> tuple[Callable[..., Any], Any] | None:
    """What to tell the item's run after an attempt: its end, a retry, or nothing (no
    run; or a re-ask, whose rejected answer is the last attempt's output: tenacity's
    retry state says nothing about it)."""
    if manager is None:
        return None
    if isinstance(verdict, ItemResult):
        return manager.on_chain_end, verdict
    if item.retry_state is None or (item.history and item.history[-1].output is not None):
        return None
    return manager.on_retry, item.retry_state


def _child_config(item: ItemRun[Any, Any], config: Any) -> Any:
    manager = item.run_manager
    if manager is None:  # a handler broke on_chain_start: run without the kit's run
        return config
    tag = f"retry:attempt:{item.attempts}" if item.attempts > 1 else None
    return patch_config(config, callbacks=manager.get_child(tag))


def _guard(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Fire a callback event; a raising handler is logged (redacted), never the batch's end."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        _log_handler_error(fn, exc)
        return None


async def _aguard(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return await fn(*args, **kwargs)
    except Exception as exc:
        _log_handler_error(fn, exc)
        return None


def _log_handler_error(fn: Callable[..., Any], exc: Exception) -> None:
    # The handler may re-raise an item's error, which carries the request's key.
    logger.warning(
        "a callback handler raised in %s; ignored:\n%s",
        getattr(fn, "__name__", "?"),
        exception_traceback(exc),
    )


# -- one item -------------------------------------------------------------------------------


def invoke_sync(
    plan: RunPlan[InputT, OutputT], item: ItemRun[InputT, OutputT]
) -> ItemResult[InputT, OutputT]:
    """Run one item to its end in this thread (``kit.invoke``)."""
    while True:
        verdict = step_sync(plan, item)
        if isinstance(verdict, ItemResult):
            return verdict
        plan.clock.sleep_sync(verdict)


async def invoke_async(
    plan: RunPlan[InputT, OutputT], item: ItemRun[InputT, OutputT]
) -> ItemResult[InputT, OutputT]:
    """Run one item to its end on this loop (``kit.ainvoke``)."""
    while True:
        verdict = await step_async(plan, item)
        if isinstance(verdict, ItemResult):
            return verdict
        await plan.clock.sleep(verdict)
