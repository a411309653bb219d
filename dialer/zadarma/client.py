"""The Zadarma API v1 client: signing, transport, budget, retries by what is safe, typed methods."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_exponential_jitter

from dialer.zadarma.budget import RateBudget, group_of
from dialer.zadarma.errors import (
    AmbiguousError,
    AuthError,
    NotSentError,
    RateLimitedError,
    RejectedError,
    ZadarmaError,
)
from dialer.zadarma.parsing import BodyError, parse_body
from dialer.zadarma.signing import Params, params_string, sign_string
from dialer.zadarma.types import (
    Balance,
    CallbackResult,
    CallerIdResult,
    PbxInternal,
    PbxInternalStatus,
    PbxStatistics,
    Price,
    RedirectionList,
    RedirectionResult,
    SipList,
    SmsResult,
    Statistics,
    TimezoneInfo,
)

log = logging.getLogger("dialer.zadarma")

PRODUCTION_URL = "https://api.zadarma.com"
SANDBOX_URL = "https://api-sandbox.zadarma.com"
# Paths whose GET has an effect: re-sending them after an ambiguous failure could ring someone twice.
ACTION_PATHS = frozenset({"/v1/request/callback/"})

R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``read`` bounds how long we wait for Zadarma to answer a request it has received."""

    connect: float = 5.0
    read: float = 15.0
    write: float = 10.0
    pool: float = 5.0

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped. Rate-limit waits are governed by the budget instead."""

    max_attempts: int = 6
    initial_s: float = 0.5
    max_wait_s: float = 20.0
    jitter_s: float = 0.5
    max_total_s: float = 180.0


@dataclass
class ClientStats:
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    by_method: dict[str, int] = field(default_factory=dict)


class ZadarmaClient:
    """A synchronous, thread-safe client. One instance per key: its budget is the key's budget.

    >>> client = ZadarmaClient(key, secret, base_url="http://127.0.0.1:8765")  # doctest: +SKIP
    >>> client.balance().balance  # doctest: +SKIP
    """

    def __init__(
        self,
        key: str,
        secret: str,
        base_url: str = PRODUCTION_URL,
        *,
        response_format: str = "json",
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        budget: RateBudget | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if response_format not in ("json", "xml"):
            raise ValueError("response_format must be 'json' or 'xml'")
        self.key = key
        self.__secret = secret
        self.base_url = base_url.rstrip("/")
        self.response_format = response_format
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.budget = budget or RateBudget(clock=clock, sleep=sleep)
        self.stats = ClientStats()
        self._clock = clock
        self._sleep = sleep
        self._http = httpx.Client(timeout=self.timeouts.httpx(), transport=transport, follow_redirects=False)

    def __repr__(self) -> str:
        return f"ZadarmaClient(key={self.key!r}, base_url={self.base_url!r})"

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> ZadarmaClient:
        settings.require_credentials()
        kwargs.setdefault("timeouts", Timeouts(read=settings.http_timeout_s))
        return cls(
            settings.zadarma_key,
            settings.zadarma_secret.get_secret_value(),
            settings.zadarma_api_url,
            **kwargs,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ZadarmaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one way requests go out -------------------------------------------------------------

    def request(
        self,
        http_method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotent: bool | None = None,
        wait_for_budget: bool = True,
        reserve: int = 0,
    ) -> dict[str, Any]:
        """Send one API call and return its parsed body; retries what is safe to retry.

        ``idempotent`` defaults to True for GETs other than ``/v1/request/callback/``. A non-idempotent
        call is re-sent only after a failure that certainly did nothing (:class:`NotSentError`);
        an :class:`AmbiguousError` is raised to the caller, who must find out whether it happened.
        With ``wait_for_budget=False`` an exhausted budget raises :class:`BudgetExhausted` at once instead
        of sleeping until the window resets (the daemon never lets pacing wait). ``reserve`` requests of the
        window are left untouched: another program on the same key may take them before its headers reach us.
        """
        http_method = http_method.upper()
        if not path.startswith("/v1/") or not path.endswith("/"):
            raise ValueError(f"API path must look like /v1/.../ (got {path!r})")
        if idempotent is None:
            idempotent = http_method == "GET" and path not in ACTION_PATHS
        clean: dict[str, str | int | float] = {
            k: v for k, v in (params or {}).items() if v is not None
        }
        clean["format"] = self.response_format
        safe = idempotent

        def should_retry(exc: BaseException) -> bool:
            return isinstance(exc, NotSentError) or (safe and isinstance(exc, AmbiguousError))

        retrying = Retrying(
            retry=retry_if_exception(should_retry),
            stop=stop_after_attempt(self.retry.max_attempts) | stop_after_delay(self.retry.max_total_s),
            wait=self._wait,
            before_sleep=self._log_retry,
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(self._send_once, http_method, path, clean, wait_for_budget, reserve)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitedError):
            # The budget already blocks until the reset; only a small pause here.
            return 0.05
        backoff = wait_exponential_jitter(
            multiplier=self.retry.initial_s, max=self.retry.max_wait_s, jitter=self.retry.jitter_s
        )
        return float(backoff(state))

    def _log_retry(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        sleep_s = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "retrying %s after %s: %s (attempt %d, sleeping %.2fs)",
            state.args[1] if len(state.args) > 1 else "?",
            type(exc).__name__,
            exc,
            state.attempt_number,
            sleep_s,
        )

    def _send_once(
        self, http_method: str, path: str, params: Params, wait_for_budget: bool = True, reserve: int = 0
    ) -> dict[str, Any]:
        group = group_of(path)
        self.budget.acquire(group, wait=wait_for_budget, reserve=reserve)
        query = params_string(params)
        headers = {
            "Authorization": f"{self.key}:{sign_string(path, query, self.__secret)}",
            "User-Agent": "dialer/0.1 (+zadarma)",
        }
        url = self.base_url + path
        if http_method == "GET":
            request = self._http.build_request("GET", httpx.URL(url, query=query.encode()), headers=headers)
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            request = self._http.build_request(http_method, url, content=query.encode(), headers=headers)
        self.stats.requests += 1
        self.stats.by_method[path] = self.stats.by_method.get(path, 0) + 1
        log.debug("zadarma request %s %s", http_method, path)
        try:
            response = self._http.send(request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol) as exc:
            self.budget.release(group, counted=False)
            raise NotSentError(f"could not connect to {self.base_url}: {_reason(exc)}", method=path) from None
        except httpx.TimeoutException as exc:
            self.budget.release(group, counted=True)
            raise AmbiguousError(f"no answer in time ({type(exc).__name__}); it may have been processed", method=path) from None
        except httpx.HTTPError as exc:
            self.budget.release(group, counted=True)
            raise AmbiguousError(f"connection broke after sending: {_reason(exc)}", method=path) from None
        self.budget.release(group, counted=True)
        return self._handle(path, group, response)

    def _handle(self, path: str, group: str, response: httpx.Response) -> dict[str, Any]:
        self.budget.update(group, response.headers)
        code = response.status_code
        if code == 429:
            self.stats.rate_limited += 1
            retry_at = _retry_at(response.headers, self._clock())
            self.budget.rate_limited(group, retry_at)
            raise RateLimitedError(_message(response) or "You exceeded the rate limit", method=path, retry_at=retry_at)
        if code >= 500:
            raise AmbiguousError(f"server error: {_message(response) or response.reason_phrase}", method=path, status_code=code)
        if code == 401:
            raise AuthError(_message(response) or "Not authorized", method=path, status_code=code)
        try:
            body = parse_body(response.text, self.response_format)
        except BodyError as exc:
            if code >= 400:
                raise RejectedError(f"HTTP {code}: {response.reason_phrase}", method=path, status_code=code) from None
            raise AmbiguousError(f"unreadable response: {exc}", method=path, status_code=code) from None
        if code >= 400 or str(body.get("status", "")).lower() != "success":
            raise RejectedError(str(body.get("message") or f"HTTP {code}"), method=path, status_code=code)
        return body

    def _typed(self, model: type[R], body: dict[str, Any], path: str) -> R:
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            # A malformed response fails this call only, and never leaks the body's secrets (it has none).
            raise AmbiguousError(f"unexpected response shape: {exc.error_count()} problems", method=path) from None

    def _get(
        self,
        model: type[R],
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        wait_for_budget: bool = True,
        reserve: int = 0,
    ) -> R:
        body = self.request("GET", path, params, wait_for_budget=wait_for_budget, reserve=reserve)
        return self._typed(model, body, path)

    # -- typed methods (zadarma-api.md §4) ---------------------------------------------------------

    def balance(self, *, wait_for_budget: bool = True, reserve: int = 0) -> Balance:
        return self._get(Balance, "/v1/info/balance/", wait_for_budget=wait_for_budget, reserve=reserve)

    def price(self, number: str, caller_id: str | None = None) -> Price:
        return self._get(Price, "/v1/info/price/", {"number": _digits(number), "caller_id": caller_id})

    def timezone(self) -> TimezoneInfo:
        return self._get(TimezoneInfo, "/v1/info/timezone/")

    def callback(
        self,
        from_: str,
        to: str,
        *,
        sip: str | None = None,
        predicted: bool = True,
        wait_for_budget: bool = True,
        reserve: int = 0,
    ) -> CallbackResult:
        """Ask Zadarma to connect ``from_`` and ``to``. With ``predicted`` it rings ``to`` first.

        Never re-sent after an ambiguous failure: that raises :class:`AmbiguousError`.
        """
        params: dict[str, Any] = {"from": _digits(from_), "to": _digits(to), "sip": sip}
        if predicted:
            params["predicted"] = "1"
        path = "/v1/request/callback/"
        body = self.request("GET", path, params, idempotent=False, wait_for_budget=wait_for_budget, reserve=reserve)
        return self._typed(CallbackResult, body, path)

    def sip_list(self) -> SipList:
        return self._get(SipList, "/v1/sip/")

    def set_caller_id(self, sip_id: str, number: str) -> CallerIdResult:
        path = "/v1/sip/callerid/"
        body = self.request("PUT", path, {"id": sip_id, "number": _digits(number)})
        return self._typed(CallerIdResult, body, path)

    def sip_redirection(self, sip_id: str | None = None) -> RedirectionList:
        return self._get(RedirectionList, "/v1/sip/redirection/", {"id": sip_id})

    def set_redirection(self, sip_id: str, *, on: bool | None = None, number: str | None = None) -> RedirectionResult:
        if (on is None) == (number is None):
            raise ValueError("give exactly one of on=True/False or number=")
        params: dict[str, Any] = {"id": sip_id}
        if number is not None:
            params.update(type="phone", number=_digits(number))
        else:
            params["status"] = "on" if on else "off"
        path = "/v1/sip/redirection/"
        return self._typed(RedirectionResult, self.request("PUT", path, params), path)

    def send_sms(
        self, numbers: Sequence[str], message: str, *, sender: str | None = None, language: str | None = None
    ) -> SmsResult:
        path = "/v1/sms/send/"
        params = {"number": ",".join(_digits(n) for n in numbers), "message": message, "sender": sender, "language": language}
        return self._typed(SmsResult, self.request("POST", path, params), path)

    def statistics(
        self,
        start: str,
        end: str,
        *,
        sip: str | None = None,
        cost_only: bool | None = None,
        call_type: str | None = None,
        skip: int | None = None,
        limit: int | None = None,
        wait_for_budget: bool = True,
    ) -> Statistics:
        params = {
            "start": start,
            "end": end,
            "sip": sip,
            "cost_only": None if cost_only is None else ("1" if cost_only else "0"),
            "type": call_type,
            "skip": skip,
            "limit": limit,
        }
        return self._get(Statistics, "/v1/statistics/", params, wait_for_budget=wait_for_budget)

    def pbx_statistics(
        self,
        start: str,
        end: str,
        *,
        call_type: str | None = None,
        skip: int | None = None,
        limit: int | None = None,
        wait_for_budget: bool = True,
    ) -> PbxStatistics:
        params = {"start": start, "end": end, "version": 2, "call_type": call_type, "skip": skip, "limit": limit}
        return self._get(PbxStatistics, "/v1/statistics/pbx/", params, wait_for_budget=wait_for_budget)

    def pbx_internal(self) -> PbxInternal:
        return self._get(PbxInternal, "/v1/pbx/internal/")

    def pbx_internal_status(self, extension: str) -> PbxInternalStatus:
        ext = str(extension).strip()
        if not ext.isdigit():
            raise ValueError(f"extension must be digits (got {extension!r})")
        return self._get(PbxInternalStatus, f"/v1/pbx/internal/{ext}/status/")


def _digits(number: str) -> str:
    """Zadarma wants numbers without '+' or spacing; extensions and scenario ids pass through."""
    text = str(number).strip()
    if text.startswith("+"):
        text = text[1:]
    return text.replace(" ", "").replace("-", "").replace("(", "").replace(")", "")


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _message(response: httpx.Response) -> str:
    try:
        body = parse_body(response.text, "xml" if response.text.lstrip().startswith("<") else "json")
    except BodyError:
        return ""
    return str(body.get("message", ""))


def _retry_at(headers: Mapping[str, str], now: float) -> float | None:
    retry_after = headers.get("retry-after")
    if retry_after:
        try:
            return now + float(retry_after)
        except ValueError:
            try:
                return parsedate_to_datetime(retry_after).timestamp()
            except (TypeError, ValueError):
                pass
    reset = headers.get("x-ratelimit-reset")
    try:
        return float(reset) if reset else None
    except ValueError:
        return None


__all__ = [
    "ACTION_PATHS",
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "AmbiguousError",
    "AuthError",
    "NotSentError",
    "RateLimitedError",
    "RejectedError",
    "RetryPolicy",
    "Timeouts",
    "ZadarmaClient",
    "ZadarmaError",
]
