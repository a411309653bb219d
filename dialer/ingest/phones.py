"""Phone numbers: E.164 normalisation, the time zones a number may be in, and calling-window checks.

Normalisation is phonenumbers' own (``normalize_one``). ``normalize_many`` gives the same answers for a whole column
at once: the common shapes (``+44 20 7946 0000``, ``0044...``, ``07700 900123``, ``447700900123``, ``tel:+44...``)
are parsed and validated with phonenumbers' metadata and regular expressions applied column-wise, which is ~20x
faster than one ``phonenumbers.parse`` per row; anything else (letters, extensions, unusual national prefixes,
non-geographic codes) goes through ``normalize_one``. ``tests/test_phones_fastpath.py`` checks that both agree.

Calling windows: a number may map to several zones (a US mobile: all of them). It may be called only at a moment
that is inside the window in EVERY candidate zone, so nobody is woken up because we guessed their zone wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import PhoneMetadata
from phonenumbers import timezone as pn_timezone
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, SUPPORTED_REGIONS

if TYPE_CHECKING:
    import pandas as pd

_TZ_DATA: dict[str, tuple[str, ...]] = pn_timezone.TIMEZONE_DATA  # type: ignore[attr-defined]
_TZ_LONGEST: int = pn_timezone.TIMEZONE_LONGEST_PREFIX  # type: ignore[attr-defined]

INVALID = "invalid number"
MANGLED = "number mangled by Excel (scientific notation)"
NO_REGION = "no country code (write it as +44..., or set a default region)"
EMPTY = "empty phone number"
UNKNOWN_TZ = "Etc/Unknown"

_SCI = re.compile(r"^\s*\+?(\d+)(?:[.,](\d+))?[eE]\+?(\d+)\s*$")
_SEPARATORS = r"[\s\-.()/\u00a0\u2010-\u2015]"


@dataclass(frozen=True, slots=True)
class Normalized:
    e164: str | None
    reason: str | None
    timezones: tuple[str, ...]
    extension: str | None = None  # "ext 12", "x12", "доб. 12", "#12": phonenumbers' own reading of it


# --- one number at a time (the reference) -------------------------------------------------------------------


def is_region(code: str | None) -> bool:
    return bool(code) and str(code).upper() in SUPPORTED_REGIONS


def unmangle_excel(raw: str) -> tuple[str | None, bool]:
    """("4.42079460000E+11" -> "442079460000", True); a lossy one -> (None, True); not scientific -> (raw, False)."""
    m = _SCI.match(raw)
    if not m:
        return raw, False
    whole, frac, exp = m.group(1), m.group(2) or "", int(m.group(3))
    try:
        value = Decimal(f"{whole}.{frac or '0'}E{exp}")
    except InvalidOperation:
        return None, True
    digits = len((whole + frac).lstrip("0"))
    if value != value.to_integral_value() or digits < len(str(int(value))):
        # Fewer significant digits than the number has: Excel rounded the rest away.
        return None, True
    return str(int(value)), True


def normalize_one(raw: object, region: str | None = None) -> Normalized:
    """E.164 and candidate time zones for one raw value, or the reason it is not a callable number."""
    text = "" if raw is None else str(raw).strip()
    if not text:
        return Normalized(None, EMPTY, ())
    unmangled, _ = unmangle_excel(text)
    if unmangled is None:
        return Normalized(None, MANGLED, ())
    text = unmangled[:-2] if re.fullmatch(r"\d+\.0", unmangled) else unmangled
    region = region.upper() if region else None
    try:
        num = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE and not region:
            return Normalized(None, NO_REGION, ())
        return Normalized(None, INVALID, ())
    if not phonenumbers.is_valid_number(num):
        return Normalized(None, INVALID, ())
    e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    return Normalized(e164, None, tuple(pn_timezone.time_zones_for_number(num)), num.extension or None)


# --- a whole column at once -----------------------------------------------------------------------------------

_OTHER_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)
_GEO_MOBILE = frozenset(getattr(phonenumbers.phonenumberutil, "_GEO_MOBILE_COUNTRIES", ()))


def _metadata(region: str) -> PhoneMetadata | None:
    return PhoneMetadata.metadata_for_region(region, None)


def _desc_match(nsn: pd.Series, desc: object) -> pd.Series:
    """phonenumbers' _is_number_matching_desc, column-wise."""
    import pandas as pd

    false = pd.Series(False, index=nsn.index)
    if desc is None:
        return false
    pattern = getattr(desc, "national_number_pattern", None)
    if not pattern:
        return false
    lengths = tuple(getattr(desc, "possible_length", ()) or ())
    ok = nsn.str.len().isin(lengths) if lengths else pd.Series(True, index=nsn.index)
    if not ok.any():
        return false
    out = false.copy()
    out[ok] = nsn[ok].str.fullmatch(pattern).fillna(False).astype(bool)
    return out


def _full(nsn: pd.Series, desc: object) -> pd.Series:
    """phonenumbers' _match_national_number(allow_prefix_match=False): a plain full match of the pattern."""
    import pandas as pd

    pattern = getattr(desc, "national_number_pattern", None) if desc is not None else None
    if not pattern:
        return pd.Series(False, index=nsn.index)
    return nsn.str.fullmatch(pattern).fillna(False).astype(bool)


def _length_result(nsn: pd.Series, md: PhoneMetadata) -> pd.Series:
    """phonenumbers' _test_number_length for UNKNOWN type: 'possible', 'local', 'short', 'long' or 'invalid'."""
    import pandas as pd

    gd = md.general_desc
    possible = sorted(gd.possible_length or ()) if gd is not None else []
    local = set(gd.possible_length_local_only or ()) if gd is not None else set()
    n = nsn.str.len()
    out = pd.Series("invalid", index=nsn.index, dtype=object)
    if not possible:
        return out
    out[n.isin(possible)] = "possible"
    out[n < possible[0]] = "short"
    out[n > possible[-1]] = "long"
    out[n.isin(local)] = "local"
    return out


def _strip_national_prefix(nsn: pd.Series, md: PhoneMetadata, slow: pd.Series) -> pd.Series:
    """phonenumbers' _maybe_strip_national_prefix_carrier_code, column-wise. Rows whose region rewrites the prefix
    (a transform rule) are flagged in ``slow`` and left for normalize_one."""

    pattern = md.national_prefix_for_parsing
    if not pattern or nsn.empty:
        return nsn
    matched = nsn.str.match(pattern).fillna(False).astype(bool)
    if not matched.any():
        return nsn
    if md.national_prefix_transform_rule:
        slow[matched[matched].index] = True
        return nsn
    cand = nsn[matched]
    rest = cand.str.replace(f"^(?:{pattern})", "", n=1, regex=True)
    keep = _full(cand, md.general_desc) & ~_full(rest, md.general_desc)
    out = nsn.copy()
    out[cand.index] = rest.where(~keep, cand)
    return out


def _after_country_code(nsn: pd.Series, md: PhoneMetadata, slow: pd.Series) -> pd.Series:
    """What parse() does after finding the country code: strip a national prefix if the rest has a usable length."""

    stripped = _strip_national_prefix(nsn, md, slow)
    changed = stripped != nsn
    if changed.any():
        res = _length_result(stripped[changed], md)
        bad = res.isin(["short", "local", "invalid"])
        stripped = stripped.copy()
        stripped[bad[bad].index] = nsn[bad[bad].index]
    return stripped


def _country_code(digits: pd.Series) -> pd.Series:
    """phonenumbers' _extract_country_code: the shortest 1-3 digit prefix that is a known calling code (0 = none)."""
    import pandas as pd

    cc = pd.Series(0, index=digits.index, dtype="int64")
    known = {str(c) for c in COUNTRY_CODE_TO_REGION_CODE}
    for n in (3, 2, 1):  # shortest wins, so assign longer first and let shorter overwrite
        pre = digits.str.slice(0, n)
        hit = pre.isin(known) & (digits.str.len() > n) & ~digits.str.startswith("0")
        cc[hit] = pre[hit].astype("int64")
    return cc


@cache
def _country_level_zones(cc: int) -> tuple[str, ...]:
    s = str(cc)
    for n in range(_TZ_LONGEST, 0, -1):
        zones = _TZ_DATA.get(s[:n])
        if zones is not None:
            return tuple(zones)
    return (UNKNOWN_TZ,)


def _geo_zones(e164_digits: pd.Series) -> pd.Series:
    import pandas as pd

    out = pd.Series(None, index=e164_digits.index, dtype=object)
    todo = pd.Series(True, index=e164_digits.index)
    data = _TZ_DATA
    for n in range(_TZ_LONGEST, 0, -1):
        if not todo.any():
            break
        pre = e164_digits[todo].str.slice(0, n)
        found = pre.map(data)
        hit = found.notna()
        out[found[hit].index] = found[hit]
        todo[found[hit].index] = False
    out[todo[todo].index] = pd.Series([(UNKNOWN_TZ,)] * int(todo.sum()), index=todo[todo].index, dtype=object)
    return out


def _classify(cc: int, nsn: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(valid, geographical) per row for numbers of one calling code, as is_valid_number/number_type decide."""
    import pandas as pd

    regions = COUNTRY_CODE_TO_REGION_CODE.get(cc, ())
    valid = pd.Series(False, index=nsn.index)
    geo = pd.Series(False, index=nsn.index)
    unassigned = pd.Series(True, index=nsn.index)
    for region in regions:
        if not unassigned.any():
            break
        md = _metadata(region)
        if md is None:
            continue
        sub = nsn[unassigned]
        v, g = _types(sub, md, cc)
        if md.leading_digits is not None:
            chosen = sub.str.match(md.leading_digits).fillna(False).astype(bool)
        else:
            chosen = v
        if len(regions) == 1:
            chosen = pd.Series(True, index=sub.index)
        idx = chosen[chosen].index
        valid[idx] = v[idx]
        geo[idx] = g[idx]
        unassigned[idx] = False
    return valid, geo


@cache
def _any_type_regex(region: str, names: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex equivalent to "any of these number types matches" (each type's possible lengths become a
    lookahead), so a column needs one pass instead of one per type."""
    md = _metadata(region)
    branches = []
    for name in names:
        desc = getattr(md, name, None)
        pattern = getattr(desc, "national_number_pattern", None) if desc is not None else None
        if not pattern:
            continue
        lengths = tuple(getattr(desc, "possible_length", ()) or ())
        if lengths:
            if all(n < 0 for n in lengths):
                continue
            look = "|".join(f"[0-9]{{{n}}}" for n in sorted(set(lengths)) if n >= 0)
            branches.append(f"(?=(?:{look})$)(?:{pattern})")
        else:
            branches.append(f"(?:{pattern})")
    if not branches:
        return None
    return re.compile("(?:" + "|".join(f"(?:{b})" for b in branches) + ")")


def _match_any(nsn: pd.Series, region: str, names: tuple[str, ...]) -> pd.Series:
    import pandas as pd

    rx = _any_type_regex(region, names)
    if rx is None or nsn.empty:
        return pd.Series(False, index=nsn.index)
    return nsn.str.fullmatch(rx).fillna(False).astype(bool)


def _types(nsn: pd.Series, md: PhoneMetadata, cc: int) -> tuple[pd.Series, pd.Series]:
    """(valid, geographical) as phonenumbers' _number_type_helper decides them for one region."""
    import pandas as pd

    region = md.id
    general = _desc_match(nsn, md.general_desc)
    sub = nsn[general]
    other = pd.Series(False, index=nsn.index)
    o = _match_any(sub, region, _OTHER_TYPES)
    other[o[o].index] = True
    rest = sub[~o]
    fixed = pd.Series(False, index=nsn.index)
    mobile = pd.Series(False, index=nsn.index)
    if not rest.empty:
        f = _match_any(rest, region, ("fixed_line",))
        fixed[f[f].index] = True
        if not md.same_mobile_and_fixed_line_pattern:
            nf = rest[~f]
            m = _match_any(nf, region, ("mobile",))
            mobile[m[m].index] = True
    typed = general & (other | fixed | mobile)
    geo = general & ~other & (fixed | (mobile & (cc in _GEO_MOBILE)))
    return typed, geo


def normalize_many(raw: Sequence[object] | pd.Series, region: str | None = None) -> pd.DataFrame:
    """normalize_one for many values: a DataFrame indexed like ``raw`` with columns e164, reason, timezones,
    extension (the fast path only takes values without one)."""
    import pandas as pd

    values = (
        raw.astype(object) if isinstance(raw, pd.Series) else pd.Series(cast(Any, list(raw)), dtype=object)
    )
    region = region.upper() if region else None
    md_region = _metadata(region) if region else None
    n = len(values)
    e164 = pd.Series(None, index=values.index, dtype=object)
    reason = pd.Series(None, index=values.index, dtype=object)
    zones = pd.Series(None, index=values.index, dtype=object)
    ext = pd.Series(None, index=values.index, dtype=object)
    if n == 0:
        return pd.DataFrame({"e164": e164, "reason": reason, "timezones": zones, "extension": ext})

    text = values.where(values.notna(), "").astype(str).str.strip()
    text = text.str.replace(r"^tel:", "", case=False, regex=True)
    cleaned = text.str.replace(_SEPARATORS, "", regex=True)
    simple = cleaned.str.fullmatch(r"\+?[0-9]{3,17}").fillna(False).astype(bool)
    slow = ~simple
    plus = cleaned.str.startswith("+") & simple
    digits = cleaned.str.lstrip("+")

    cc = pd.Series(0, index=values.index, dtype="int64")
    nsn = pd.Series("", index=values.index, dtype=object)

    intl = plus.copy()
    national = simple & ~plus
    if md_region is None:
        slow |= national
        national[:] = False
    elif national.any():
        idd = md_region.international_prefix
        if idd:
            nd = digits[national]
            m = nd.str.match(idd).fillna(False).astype(bool)
            rest = nd[m].str.replace(f"^(?:{idd})", "", n=1, regex=True)
            # phonenumbers does not treat it as an IDD when a 0 follows (country codes never start with 0).
            ok = ~rest.str.startswith("0") & (rest.str.len() > 2)
            idx = rest[ok].index
            digits[idx] = rest[ok]
            intl[idx] = True
            national[idx] = False
            bad = rest[~ok].index
            slow[bad] = True
            national[bad] = False

    # International: country code from the digits, then the national prefix rule of that country.
    if intl.any():
        found = _country_code(digits[intl])
        unknown = found[found == 0].index
        slow[unknown] = True
        ok = found[found != 0]
        cc[ok.index] = ok.astype("int64")
        nsn[ok.index] = pd.Series(
            [d[len(str(c)) :] for d, c in zip(digits[ok.index], ok, strict=True)],
            index=ok.index,
            dtype=object,
        )
        for code, idx in ok.groupby(ok).groups.items():
            md = _main_metadata(_int(code))
            if md is None or COUNTRY_CODE_TO_REGION_CODE.get(_int(code)) == ("001",):
                slow[idx] = True
                continue
            nsn[idx] = _after_country_code(nsn[idx], md, slow)

    # National (digits without + or IDD) with the campaign's region.
    if national.any() and md_region is not None:
        code = md_region.country_code
        nd = digits[national]
        nsn[nd.index] = nd
        cc[nd.index] = code
        sc = str(code)
        starts = nd.str.startswith(sc)
        if starts.any():
            full = nd[starts]
            pot = _strip_national_prefix(full.str.slice(len(sc)), md_region, slow)
            use = (~_full(full, md_region.general_desc) & _full(pot, md_region.general_desc)) | (
                _length_result(full, md_region) == "long"
            )
            nsn[use[use].index] = pot[use]
        nsn[nd.index] = _after_country_code(nsn[nd.index], md_region, slow)

    fast = (intl | national) & ~slow
    too_short = fast & (nsn.str.len() < 2)
    too_long = fast & (nsn.str.len() > 17)
    reason[too_short | too_long] = INVALID
    fast &= ~(too_short | too_long)

    for code, idx in cc[fast].groupby(cc[fast]).groups.items():
        sub = nsn[idx]
        valid, geo = _classify(_int(code), sub)
        good = valid[valid].index
        reason[valid[~valid].index] = INVALID
        if len(good) == 0:
            continue
        digits_e164 = str(code) + sub[good]
        e164[good] = "+" + digits_e164
        geo_idx = geo[good][geo[good]].index
        nongeo_idx = geo[good][~geo[good]].index
        if len(geo_idx):
            zones[geo_idx] = _geo_zones(digits_e164[geo_idx])
        if len(nongeo_idx):
            zones[nongeo_idx] = pd.Series(
                cast(Any, [_country_level_zones(_int(code))] * len(nongeo_idx)), index=nongeo_idx
            )

    slow_idx = slow[slow].index
    if len(slow_idx):
        results = [normalize_one(v, region) for v in values[slow_idx]]
        e164[slow_idx] = [r.e164 for r in results]
        reason[slow_idx] = [r.reason for r in results]
        zones[slow_idx] = pd.Series([r.timezones for r in results], index=slow_idx, dtype=object)
        ext[slow_idx] = [r.extension for r in results]
    empty = reason.isna() & e164.isna() & (text == "")
    reason[empty] = EMPTY
    zones[zones.isna()] = pd.Series(
        [()] * int(zones.isna().sum()), index=zones[zones.isna()].index, dtype=object
    )
    out = pd.DataFrame({"e164": e164, "reason": reason, "timezones": zones, "extension": ext})
    for col in ("e164", "reason", "extension"):
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


def _int(value: object) -> int:
    return int(cast(Any, value))


@cache
def _main_metadata(cc: int) -> PhoneMetadata | None:
    regions = COUNTRY_CODE_TO_REGION_CODE.get(cc)
    if not regions:
        return None
    return PhoneMetadata.metadata_for_region_or_calling_code(cc, regions[0])


# --- calling windows -----------------------------------------------------------------------------------------


def parse_hhmm(value: str) -> time:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
    if not m or int(m.group(1)) > 24 or int(m.group(2)) > 59 or (int(m.group(1)) == 24 and int(m.group(2))):
        raise ValueError(f"{value!r} is not a time of day like 09:00")
    h, mi = int(m.group(1)), int(m.group(2))
    return time.max if h == 24 else time(h, mi)


@lru_cache(maxsize=4096)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def is_timezone(name: str) -> bool:
    if not name or name == UNKNOWN_TZ:
        return False
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@lru_cache(maxsize=1)
def _as_time(value: str | time) -> time:
    return parse_hhmm(value) if isinstance(value, str) else value


def _usable_zones(timezones: Iterable[str], fallback: str = "UTC") -> list[str]:
    zones = [z for z in timezones if z and z != UNKNOWN_TZ]
    return zones or [fallback]


def callable_now(
    timezones: Iterable[str],
    now_utc: datetime,
    window_start: str | time,
    window_end: str | time,
    weekdays: Iterable[int] = (0, 1, 2, 3, 4),
    holidays: Iterable[str | date] = (),
    fallback_zone: str = "UTC",
) -> bool:
    """True only if ``now_utc`` is inside [window_start, window_end) on an allowed, non-holiday day in every
    candidate zone. Unknown zones fall back to ``fallback_zone`` (the campaign's zone)."""
    if now_utc.tzinfo is None:
        raise ValueError("now_utc must be timezone-aware")
    start, end = _as_time(window_start), _as_time(window_end)
    days = set(weekdays)
    hol = {h if isinstance(h, str) else h.isoformat() for h in holidays}
    for name in _usable_zones(timezones, fallback_zone):
        local = now_utc.astimezone(zone(name))
        if local.weekday() not in days or local.date().isoformat() in hol:
            return False
        t = local.time().replace(tzinfo=None)
        if not (start <= t < end):
            return False
    return True


def next_window_start(
    timezones: Iterable[str],
    now_utc: datetime,
    window_start: str | time,
    window_end: str | time,
    weekdays: Iterable[int] = (0, 1, 2, 3, 4),
    holidays: Iterable[str | date] = (),
    fallback_zone: str = "UTC",
    horizon_days: int = 31,
) -> datetime | None:
    """The first moment >= now_utc when ``callable_now`` is true (now itself if callable), in UTC; None if there is
    none within ``horizon_days`` (the zones' windows never overlap, or every day is excluded)."""
    zones = _usable_zones(timezones, fallback_zone)
    start = _as_time(window_start)
    days, hol = list(weekdays), list(holidays)

    def ok(t: datetime) -> bool:
        return callable_now(zones, t, window_start, window_end, days, hol, fallback_zone)

    if ok(now_utc):
        return now_utc
    # The callable set is an intersection of per-zone intervals, so it starts at some zone's window start.
    candidates: set[datetime] = set()
    for name in zones:
        tz = zone(name)
        first = now_utc.astimezone(tz).date()
        for d in range(horizon_days + 1):
            local = datetime.combine(first + timedelta(days=d), start, tzinfo=tz)
            utc = local.astimezone(UTC)
            if utc > now_utc:
                candidates.add(utc)
    for t in sorted(candidates):
        if ok(t):
            return t
    return None


@lru_cache(maxsize=65536)
def ever_callable(
    timezones: tuple[str, ...],
    window_start: str,
    window_end: str,
    weekdays: tuple[int, ...],
    fallback_zone: str,
) -> bool:
    """Is there any moment of a normal week (no holidays), in winter or in summer, when every candidate zone is
    inside the window? False means the contact can never be called under these settings."""
    # DST shifts zones against each other, so an overlap may exist in only one half of the year.
    for probe in (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 7, 6, tzinfo=UTC)):
        if next_window_start(timezones, probe, window_start, window_end, weekdays, (), fallback_zone, 15):
            return True
    return False
