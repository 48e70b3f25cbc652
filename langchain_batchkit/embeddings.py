"""Embeddings at scale: packed, paced, resumable, into a vector store.

:func:`~langchain_batchkit.embed_texts`, :func:`~langchain_batchkit.aembed_texts` and
:func:`~langchain_batchkit.paced_embeddings` are also importable from
``langchain_batchkit`` itself; the types they take and return, and
:class:`BatchEmbeddings` (the Batch API at half price), live here.

Example:
    >>> from langchain_batchkit.embeddings import EmbedLimits
    >>> EmbedLimits.for_model("text-embedding-3-small").max_inputs
    2048
"""

from langchain_batchkit._embed import EmbedReport, aembed_texts, embed_texts
from langchain_batchkit._embed_batch import BatchEmbeddings
from langchain_batchkit._embed_paced import PacedEmbeddings, paced_embeddings
from langchain_batchkit._embed_pack import EmbedLimits
from langchain_batchkit._embed_store import EmbeddingStore

__all__ = [
    "BatchEmbeddings",
    "EmbedLimits",
    "EmbedReport",
    "EmbeddingStore",
    "PacedEmbeddings",
    "aembed_texts",
    "embed_texts",
    "paced_embeddings",
]
