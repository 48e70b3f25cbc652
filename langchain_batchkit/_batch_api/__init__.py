"""Provider Batch API jobs (OpenAI, Azure OpenAI, Anthropic) for a chain's model calls.

Modules, one concern each: ``_chain`` (cut a chain into rounds, one per model
step), ``_backends`` (a model step's provider), ``_jobapi`` (what the job loop asks
of a provider), ``_requests`` (request bodies, job planning), ``_responses``
(result lines, messages), ``_state`` (item and job transitions), ``_store``
(SQLite state), ``_provider`` (the OpenAI and Azure OpenAI calls), ``_azure``
(AzureChatOpenAI's requests), ``_anthropic`` and ``_anthropic_batches``
(ChatAnthropic's requests and messages, the Message Batches calls), ``_run`` (one
run's rounds), ``_jobs`` (the job loop), ``_create`` (creating each job once,
across crashes), ``_queue``, ``_queue_policy`` and
``_queue_store`` (the enqueued-token queue jobs wait in: the run's side, the
decisions, the shared SQLite state), ``_private_loop`` (the job I/O of sync
calls), ``_options`` and ``_errors`` (values), ``_runner`` (the public
:class:`BatchAPIRunner`).
"""

from langchain_batchkit._batch_api._errors import (
    BatchAPIError,
    BatchJobUnfinishedError,
    BatchRequestError,
    BatchStateError,
)
from langchain_batchkit._batch_api._options import BatchAPIOptions
from langchain_batchkit._batch_api._runner import BatchAPIRunner

__all__ = [
    "BatchAPIError",
    "BatchAPIOptions",
    "BatchAPIRunner",
    "BatchJobUnfinishedError",
    "BatchRequestError",
    "BatchStateError",
]
