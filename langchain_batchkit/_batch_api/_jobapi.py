"""What the job loop asks of a provider's batch service, whatever the provider.

OpenAI and Azure OpenAI upload a JSONL file and create a job on it; Anthropic
takes the requests in the create call itself. Both are one
:class:`JobClient`: build a request line, create a job from lines, read where a
job stands as a :class:`JobView`, read its result lines back as
:class:`LineOutcome` values, cancel, and find a job created just before a crash.
The loop never sees a provider's own types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

__all__ = ["JobClient", "JobView", "LineOutcome"]


@dataclass(frozen=True, slots=True)
class LineOutcome:
    """One result line of a job: the answer body, or the error."""

    custom_id: str
    body: Mapping[str, Any] | None = None
    error: Exception | None = None


@dataclass(frozen=True, slots=True)
class JobView:
    """Where one provider job stands, in the provider's own words.

    Attributes:
        id: the provider's job id.
        status: the provider's status (``in_progress``, ``ended``, ...), kept as is.
        final: the job changes no more; its results can be read.
        outcome: the final status in the loop's terms: ``completed``, ``expired``,
            ``cancelled`` or ``failed`` (``None`` while it runs).
        input_file_id: the uploaded input file, for providers that upload one.
        errors: a job the provider refused (``failed``): line number (``None``: the
            whole job) -> (code, message).
        handle: what the client needs again to read the results (the provider's object).
    """

    id: str
    status: str
    final: bool
    outcome: str | None = None
    input_file_id: str | None = None
    errors: Mapping[int | None, tuple[str | None, str]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    handle: Any = field(default=None, compare=False, repr=False)


class JobClient(Protocol):
    """A provider's batch calls for one run, opened in the loop that makes them.

    ``max_requests`` and ``max_bytes`` are the provider's per-job limits, used when
    :class:`BatchAPIOptions` leaves them unset. ``unique_ids``: the provider keeps no
    job metadata, so custom_ids carry the run's tag (a job found after a crash whose
    results carry none of its custom_ids was another one).
    """

    max_requests: int
    max_bytes: int
    unique_ids: bool

    async def __aenter__(self) -> JobClient: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    def line(self, custom_id: str, body_json: str) -> bytes:
        """One request of a job, as the provider takes it (newline included)."""
        ...

    async def create(
        self,
        *,
        name: str,
        lines: Sequence[bytes],
        input_file_id: str | None,
        metadata: Mapping[str, str],
        on_upload: Callable[[str], None],
    ) -> JobView:
        """Create a job of ``lines``; ``on_upload`` records an uploaded file's id first."""
        ...

    async def retrieve(self, job_id: str) -> JobView: ...

    async def results(self, job: JobView) -> list[LineOutcome]:
        """The result lines of a final job (answers and per-request errors)."""
        ...

    async def cancel(self, job_id: str) -> bool:
        """Ask the provider to cancel; ``False`` when the job had already ended."""
        ...

    async def find(
        self,
        metadata: Mapping[str, str],
        *,
        requests: int,
        created_after: float | None,
        known: frozenset[str] = frozenset(),
    ) -> JobView | None:
        """The job created for ``metadata`` (a crash came before its id was saved).

        Providers with job metadata match on it; others on the request count and
        the creation time (unix seconds) the run recorded before creating it, never
        taking a job of ``known`` (the ids the run's state file already holds).
        """
        ...
