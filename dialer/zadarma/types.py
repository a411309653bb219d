"""Typed results of the API methods. JSON and XML bodies validate into the same objects.

XML carries every value as text and an empty array as an empty element, so fields coerce from strings
and list fields accept ``""`` as an empty list.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _to_str(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    return value


def _to_list(value: Any) -> Any:
    if value in ("", None):
        return []
    if isinstance(value, dict):
        return [value]
    return value


def _to_bool(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return value


Str = Annotated[str, BeforeValidator(_to_str)]
Flag = Annotated[bool, BeforeValidator(_to_bool)]


def ListOf(item: Any) -> Any:
    return Annotated[list[item], BeforeValidator(_to_list)]


class Result(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    status: Str = "success"


class Balance(Result):
    balance: Decimal
    currency: Str


class PriceInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    prefix: Str = ""
    description: Str = ""
    price: Decimal
    currency: Str = ""


class Price(Result):
    info: PriceInfo


class TimezoneInfo(Result):
    unixtime: int
    datetime: Str
    timezone: Str


class CallbackResult(Result):
    from_: Str = Field(default="", alias="from")
    to: Str
    time: int


class Sip(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: Str
    display_name: Str = ""
    lines: int = 0


class SipList(Result):
    sips: ListOf(Sip)  # type: ignore[valid-type]
    left: int = 0


class CallerIdResult(Result):
    sip: Str
    new_caller_id: Str


class Redirection(BaseModel):
    model_config = ConfigDict(extra="allow")
    sip_id: Str
    status: Str = ""
    condition: Str = ""
    destination: Str = ""
    destination_value: Str = ""


class RedirectionList(Result):
    info: ListOf(Redirection)  # type: ignore[valid-type]


class RedirectionResult(Result):
    sip: Str
    current_status: Str = ""
    destination: Str = ""


class DeniedNumber(BaseModel):
    model_config = ConfigDict(extra="allow")
    number: Str
    message: Str = ""


class SmsResult(Result):
    messages: int
    cost: Decimal = Decimal(0)
    currency: Str = ""
    denied_numbers: ListOf(DeniedNumber) = []  # type: ignore[valid-type]


class CallStat(BaseModel):
    """A row of ``/v1/statistics/`` (calls and their cost)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    id: Str
    sip: Str = ""
    callstart: Str
    from_: Str = Field(default="", alias="from")
    to: Str = ""
    description: Str = ""
    disposition: Str = ""
    billseconds: int = 0
    cost: Decimal = Decimal(0)
    billcost: Decimal = Decimal(0)
    currency: Str = ""


class Statistics(Result):
    start: Str = ""
    end: Str = ""
    stats: ListOf(CallStat) = []  # type: ignore[valid-type]


class PbxCallStat(BaseModel):
    """A leg row of ``/v1/statistics/pbx/`` (version 2)."""

    model_config = ConfigDict(extra="allow")
    call_id: Str
    sip: Str = ""
    callstart: Str
    clid: Str = ""
    destination: Str = ""
    disposition: Str = ""
    seconds: int = 0
    is_recorded: Str = ""
    pbx_call_id: Str = ""


class PbxStatistics(Result):
    start: Str = ""
    end: Str = ""
    version: int = 2
    stats: ListOf(PbxCallStat) = []  # type: ignore[valid-type]


class PbxInternal(Result):
    pbx_id: Str
    numbers: ListOf(Str)  # type: ignore[valid-type]


class PbxInternalStatus(Result):
    pbx_id: Str
    number: Str
    is_online: Flag
