"""What runs cost: prices, estimates, and the dollar budget's numbers.

:class:`~langchain_batchkit.Budget` and :class:`~langchain_batchkit.Price` are
also importable from ``langchain_batchkit`` itself; the rest lives here.

Example:
    >>> from langchain_batchkit.costs import CallUsage, Price, PriceBook
    >>> book = PriceBook({"my-finetune": Price(input=0.30, output=1.20)})
    >>> round(book.cost(CallUsage(input_tokens=2000, output_tokens=500), "my-finetune"), 6)
    0.0012
"""

from langchain_batchkit._budget import Budget, BudgetStats
from langchain_batchkit._estimate import CostEstimate
from langchain_batchkit._prices import CallUsage, Price, PriceBook, Tier
from langchain_batchkit._tokenize import TokenCount, count_messages, count_text

__all__ = [
    "Budget",
    "BudgetStats",
    "CallUsage",
    "CostEstimate",
    "Price",
    "PriceBook",
    "Tier",
    "TokenCount",
    "count_messages",
    "count_text",
]
