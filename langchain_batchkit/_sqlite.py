"""What both SQLite stores share: opening in WAL mode, and a transaction that rolls back.

The checkpoint (``_checkpoint.py``) and the Batch API's job store
(``_batch_api/_store.py``) each keep their own tables; how a file is opened and
how a transaction ends are written once, here.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["open_wal", "transaction"]

logger = logging.getLogger(__name__)


def open_wal(path: str, *, timeout: float = 5.0, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), WAL journal for a file.

    ``":memory:"`` gets no WAL (it has no journal file). Raises ``sqlite3.Error``.
    """
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        if path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def transaction(db: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[None]:
    """``begin`` ... ``COMMIT``; on any failure ``ROLLBACK``, so the next one can begin.

    Example:
        >>> db = open_wal(":memory:")
        >>> with transaction(db):
        ...     _ = db.execute("CREATE TABLE t (x)")
        >>> db.in_transaction
        False
    """
    db.execute(begin)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                logger.warning("rolling back a SQLite transaction failed", exc_info=True)
        raise
