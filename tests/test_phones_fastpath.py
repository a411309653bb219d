"""normalize_many (column-wise) must give exactly what phonenumbers gives one number at a time."""

from __future__ import annotations

import random

import phonenumbers as pn
import pytest
from phonenumbers import PhoneNumberFormat as F
from phonenumbers import PhoneNumberType as T

from dialer.ingest.phones import EMPTY, MANGLED, NO_REGION, normalize_many, normalize_one

REGIONS = ["GB", "RU", "US", "DE", "FR", "IT", "AR", "BR", "IN", "AU", "KZ", "MX", "CN", "JP", "GG", "IM", "CA",
           "NL", "ES", "PL", "UA", "TR", "AE", "ZA", "NG", "SG", "NZ", "IE", "CH", "AT"]  # fmt: skip
TYPES = [T.FIXED_LINE, T.MOBILE, T.TOLL_FREE, T.PREMIUM_RATE, T.VOIP, T.SHARED_COST, T.PERSONAL_NUMBER, T.UAN]


def _inputs() -> list[str]:
    rng = random.Random(7)
    out = ["8 (495) 123-45-67", "+7 495 1234567", "0044 20 7946 0000", "tel:+442079460000", "4.42079E+11",
           "4.42079460000E+11", "", "   ", "abc", "07911 123456", "+44 (0) 20 7946 0000", "++44 20 7946 0000",
           "12", "+1 212 555 0199", "2125550199", "+800 1234 5678", "011 44 20 7946 0000", "0 800 123 4567",
           "+44 20 7946 0000 ext. 12", "+٤٤ ٢٠ ٧٩٤٦ ٠٠٠٠", "(020) 7946-0000", "020.7946.0000"]  # fmt: skip
    for region in REGIONS:
        for t in TYPES:
            ex = pn.example_number_for_type(region, t)
            if ex is None:
                continue
            out += [pn.format_number(ex, f) for f in (F.E164, F.INTERNATIONAL, F.NATIONAL, F.RFC3966)]
            e = pn.format_number(ex, F.E164)[1:]
            out += [e, "00" + e, "011" + e, "810" + e]
            for _ in range(3):  # near misses: one digit changed, dropped or added
                d = list(e)
                i = rng.randrange(len(d))
                op = rng.random()
                if op < 0.4:
                    d[i] = str(rng.randrange(10))
                elif op < 0.7:
                    del d[i]
                else:
                    d.insert(i, str(rng.randrange(10)))
                out += ["+" + "".join(d), "".join(d), "0" + "".join(d[2:])]
    return out


INPUTS = _inputs()


@pytest.mark.parametrize("region", [None, "GB", "RU", "US", "DE", "AR", "IT"])
def test_column_wise_equals_one_at_a_time(region: str | None) -> None:
    df = normalize_many(INPUTS, region)
    mismatches = []
    for raw, e164, reason, zones in zip(INPUTS, df["e164"], df["reason"], df["timezones"], strict=True):
        ref = normalize_one(raw, region)
        if (e164, reason, tuple(zones)) != (ref.e164, ref.reason, ref.timezones):
            mismatches.append((raw, (e164, reason, zones), ref))
    assert not mismatches, mismatches[:5]
    assert df["e164"].notna().sum() > len(INPUTS) // 8  # the inputs really exercise valid numbers


def test_reasons() -> None:
    assert normalize_one("", "GB").reason == EMPTY
    assert normalize_one("4.42079E+11", "GB").reason == MANGLED
    assert normalize_one("4.42079460000E+11", "GB").e164 == "+442079460000"
    assert normalize_one("020 7946 0000", None).reason == NO_REGION
    assert normalize_one("020 7946 0000", "GB").e164 == "+442079460000"
