"""What a :class:`~langchain_batchkit.RateLimit` paces by, as one immutable value.

Settings are values, state is per limiter (as aiometer's ``Meter``): one
:class:`RateLimitSettings` can build a limiter in this process, in every Ray worker
(it pickles) and in the cluster's reservation actor, and each builds its own
buckets from it. Every field is checked once, here, and a bad one raises a
:class:`~langchain_batchkit.ConfigurationError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from langchain_batchkit._errors import ConfigurationError
from langchain_batchkit._tokens import TokenEstimator
from langchain_batchkit._validate import check_callable, check_int, check_number, check_optional

__all__ = ["DEFAULT_MAX_PAUSE", "RateLimitKeywords", "RateLimitSettings", "SettingsView"]

#: The longest a provider's answer may pause every request sharing a limiter (seconds).
DEFAULT_MAX_PAUSE = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitSettings:
    """The budgets and reflexes of a :class:`~langchain_batchkit.RateLimit`, validated.

    ``RateLimit(requests_per_minute=500)`` builds one of these from its keywords;
    ``RateLimit.from_settings(settings)`` takes one ready-made, and ``limit.settings``
    gives it back. Being frozen, one value can configure several limiters (two
    kits, each with its own budget) without their sharing any state.

    Attributes:
        requests_per_minute: request budget; ``None`` for no request pacing.
        tokens_per_minute: token budget (estimated before, corrected after each call);
            a request estimated above it can never fit and fails at once.
        max_in_flight: the most requests in flight at once (``None``: no cap until the
            provider pushes back).
        burst: requests that may start back to back (1 = evenly spaced).
        headroom: the fraction of the budgets to use, in (0, 1]: 0.97 leaves 3% for
            network jitter against a provider counting a sliding window.
        adaptive: learn from 429s and ``x-ratelimit-*`` headers (pace, pauses, cap).
        cooldown: seconds between two halvings of the in-flight cap.
        max_pause: the longest one answer may pause every request (seconds, finite).
        token_estimator: ``(messages, invocation_params) -> tokens``; ``None`` for
            :func:`~langchain_batchkit.sizing.estimate_tokens`.

    Example:
        >>> settings = RateLimitSettings(requests_per_minute=500, max_in_flight=16)
        >>> settings.headroom, settings.max_pause
        (0.97, 60.0)
        >>> RateLimitSettings(burst=0)
        Traceback (most recent call last):
        ...
        langchain_batchkit._errors.ConfigurationError: burst must be a number >= 1.0, got 0
    """

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_in_flight: int | None = None
    burst: float = 1.0
    headroom: float = 0.97
    adaptive: bool = True
    cooldown: float = 1.0
    max_pause: float = DEFAULT_MAX_PAUSE
    token_estimator: TokenEstimator | None = None

    def __post_init__(self) -> None:
        check_optional(check_number, "requests_per_minute", self.requests_per_minute, strict=True)
        check_optional(check_number, "tokens_per_minute", self.tokens_per_minute, strict=True)
        check_optional(check_int, "max_in_flight", self.max_in_flight)
        check_number("burst", self.burst, minimum=1.0)
        check_number("headroom", self.headroom, strict=True, maximum=1.0)
        if not isinstance(self.adaptive, bool):
            raise ConfigurationError(f"adaptive must be a bool, got {self.adaptive!r}")
        check_number("cooldown", self.cooldown)
        max_pause = check_number("max_pause", self.max_pause, strict=True)
        object.__setattr__(self, "max_pause", max_pause)
        if self.token_estimator is not None:
            check_callable("token_estimator", self.token_estimator, "(messages, params) -> int")


class RateLimitKeywords(TypedDict, total=False):
    """:class:`RateLimitSettings`' fields as keywords, for a signature that passes them on
    (``**limits: Unpack[RateLimitKeywords]``); each defaults as the settings do."""

    requests_per_minute: float | None
    tokens_per_minute: float | None
    max_in_flight: int | None
    burst: float
    headroom: float
    adaptive: bool
    cooldown: float
    max_pause: float
    token_estimator: TokenEstimator | None


class SettingsView:
    """Read-only access to a limiter's settings, and its repr, for any class holding them.

    Mixed into :class:`~langchain_batchkit.RateLimit` and
    :class:`~langchain_batchkit.ray.ClusterRateLimit`, so both read the same way.
    """

    __slots__ = ()
    _settings: RateLimitSettings

    def __repr__(self) -> str:
        s = self._settings
        return (
            f"{type(self).__name__}(requests_per_minute={s.requests_per_minute}, "
            f"tokens_per_minute={s.tokens_per_minute}, max_in_flight={s.max_in_flight})"
        )

    @property
    def settings(self) -> RateLimitSettings:
        """The settings this was built from."""
        return self._settings

    @property
    def requests_per_minute(self) -> float | None:
        """The request budget (``None``: no request pacing)."""
        return self._settings.requests_per_minute

    @property
    def tokens_per_minute(self) -> float | None:
        """The token budget (``None``: no token pacing)."""
        return self._settings.tokens_per_minute

    @property
    def max_in_flight(self) -> int | None:
        """The configured cap on requests in flight (``None``: none until a 429)."""
        return self._settings.max_in_flight

    @property
    def burst(self) -> float:
        """Requests that may start back to back."""
        return self._settings.burst

    @property
    def headroom(self) -> float:
        """The fraction of the budgets used."""
        return self._settings.headroom

    @property
    def adaptive(self) -> bool:
        """Whether 429s and ``x-ratelimit-*`` headers adapt the pace and the cap."""
        return self._settings.adaptive

    @property
    def cooldown(self) -> float:
        """Seconds between two halvings of the in-flight cap."""
        return self._settings.cooldown

    @property
    def max_pause(self) -> float:
        """The longest one answer may pause every request (seconds)."""
        return self._settings.max_pause
