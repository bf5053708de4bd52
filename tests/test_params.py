"""params.py: what arrives from outside is checked once, here."""

from __future__ import annotations

import html
import urllib.parse
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings, strategies as st

import badge
import params
from conftest import hostile_text
from params import ParamError


def parse(query: str) -> params.BadgeQuery:
    return params.parse_badge_query(params.parse_query_string(query))


def test_original_visitor_badge_parameters():
    q = parse("page_id=alice.repo&left_text=views&left_color=%23000&right_color=green")
    assert q.page_id == "alice.repo" and q.count
    assert (q.look.label, q.look.label_color, q.look.color) == ("views", "#000", "#67ac09")


def test_defaults_are_those_of_the_original_service():
    look = parse("page_id=x").look
    assert (look.label, look.label_color, look.color) == ("visitors", "#595959", "#1283c3")


@pytest.mark.parametrize("query, count", [
    ("page_id=x", True), ("page_id=x&query_only=true", False), ("page_id=x&query_only=false", True),
    ("page_id=x&increment=false", False), ("page_id=x&increment=true", True),
    ("page_id=x&query_only=true&increment=true", False),
    ("page_id=x&query_only=false&increment=false", False),
])
def test_counting_flags(query, count):
    assert parse(query).count is count


@pytest.mark.parametrize("query, message", [
    ("", "missing page_id"),
    ("page_id=", "empty page_id"),
    ("page_id=" + "a" * 257, "page_id too long"),
    ("page_id=a%00b", "invalid page_id"),
    ("page_id=a%0Ab", "invalid page_id"),
    ("page_id=%ED%A0%80", "invalid page_id"),       # a UTF-8-encoded lone surrogate
    ("page_id=%FF", "invalid page_id"),             # not UTF-8 at all
    ("page_id=a%E2%80%A8b", "invalid page_id"),     # line separator
    ("page_id=x&page_id=y", "duplicate page_id"),
    ("page_id=x&left_color=nope", "invalid left_color"),
    ("page_id=x&right_color=%23ggg", "invalid right_color"),
    ("page_id=x&color=url(x)", "invalid color"),
    ("page_id=x&labelColor=12345", "invalid labelColor"),
    ("page_id=x&left_text=" + "a" * 65, "left_text too long"),
    ("page_id=x&label=a%07", "invalid label"),
    ("page_id=x&query_only=maybe", "invalid query_only"),
    ("page_id=x&increment=2", "invalid increment"),
    ("page_id=x&style=round", "invalid style"),
    ("page_id=x&format=hex", "invalid format"),
    ("page_id=x&show=week", "invalid show"),
    ("page_id=x&base=-1", "invalid base"),
    ("page_id=x&base=1000000000001", "invalid base"),
    ("page_id=x&base=1e3", "invalid base"),
    ("page_id=x&logo=https://example.org/a.svg", "invalid logo"),
    ("page_id=x&logo=data:image/svg%2Bxml;base64,!!!", "invalid logo"),
    ("page_id=x&logoColor=nope", "invalid logoColor"),
])
def test_bad_input_names_the_problem(query, message):
    with pytest.raises(ParamError) as error:
        parse(query)
    assert str(error.value) == message


def test_too_many_fields_is_a_clear_error():
    assert parse("page_id=x" + "&t=1" * (params.MAX_FIELDS - 1)).page_id == "x"
    with pytest.raises(ParamError, match="too many parameters"):
        parse("page_id=x" + "&t=1" * params.MAX_FIELDS)


def test_limits_are_inclusive():
    assert parse("page_id=" + "a" * 256).page_id == "a" * 256
    assert parse("page_id=x&left_text=" + "b" * 64).look.label == "b" * 64
    assert parse("page_id=x&base=1000000000000").look.base == 10**12


def test_page_id_counts_characters_not_bytes():
    assert parse("page_id=" + urllib.parse.quote("é" * 256)).page_id == "é" * 256


def test_unicode_page_ids_are_kept_exactly():
    assert parse("page_id=" + urllib.parse.quote("博客/文章 1 👋")).page_id == "博客/文章 1 👋"


def test_unknown_parameters_are_ignored():
    assert parse("page_id=x&t=12345&utm_source=readme").page_id == "x"


@pytest.mark.parametrize("first, second, winner", [
    ("left_text=a", "label=b", "a"), ("label=b", "title=c", "b"), ("title=c", "left_text=a", "a"),
])
def test_seed_names_win_over_aliases(first, second, winner):
    assert parse(f"page_id=x&{first}&{second}").look.label == winner


@pytest.mark.parametrize("value, fmt", [("true", "comma"), ("false", "plain"), ("True", "comma")])
def test_laobi_icu_format_flag_is_understood(value, fmt):
    assert parse(f"page_id=x&format={value}").look.format == fmt


def test_shields_names_are_accepted():
    look = parse("page_id=x&label=hits&labelColor=red&color=blue&style=for-the-badge").look
    assert (look.label, look.label_color, look.color, look.style) == (
        "hits", "#dd4343", "#007ec6", "for-the-badge")


def test_logo_data_uri_is_decoded_and_reencoded():
    uri = "data:image/svg+xml;base64,PHN2Zy8+"   # "<svg/>"
    assert parse("page_id=x&logo=" + urllib.parse.quote(uri)).look.logo == uri
    # A "+" in base64 arrives as a space when the URL was not encoded.
    assert parse("page_id=x&logo=data:image/png;base64,ab+c").look.logo == \
        "data:image/png;base64,ab+c"


def test_logo_size_is_bounded():
    import base64
    big = base64.b64encode(b"x" * (params.LOGO_MAX_BYTES + 1)).decode()
    with pytest.raises(ParamError, match="logo too large"):
        parse("page_id=x&logo=data:image/png;base64," + big)


def test_error_label_is_the_requests_when_valid():
    assert params.label_for_error({"left_text": "hits"}) == "hits"
    assert params.label_for_error({"left_text": "x" * 100}) == badge.DEFAULT_LABEL


@pytest.mark.parametrize("value, days", [(None, 30), ("1", 1), ("365", 365)])
def test_days(value, days):
    assert params.parse_days(value) == days


@pytest.mark.parametrize("value", ["0", "366", "-1", "a", ""])
def test_bad_days(value):
    with pytest.raises(ParamError, match="invalid days"):
        params.parse_days(value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_query_string_either_parses_or_names_a_problem(text):
    try:
        q = params.parse_badge_query(params.parse_query_string(text))
    except ParamError as e:
        assert str(e).isascii() and "<" not in str(e)
    else:
        assert 1 <= len(q.page_id) <= params.PAGE_ID_MAX


# Hardening: characters XML forbids, characters that hide ##################

REFUSED = {
    "noncharacter U+FFFE": "\ufffe", "noncharacter U+FFFF": "\uffff",
    "noncharacter U+FDD0": "\ufdd0", "noncharacter U+1FFFE": "\U0001fffe",
    "zero-width space": "\u200b", "byte-order mark": "\ufeff",
    "bidi override U+202E": "\u202e", "bidi embedding U+202A": "\u202a",
    "bidi isolate U+2066": "\u2066", "bidi isolate U+2069": "\u2069", "soft hyphen": "\u00ad",
}


@pytest.mark.parametrize("char", REFUSED.values(), ids=REFUSED.keys())
@pytest.mark.parametrize("name", ["page_id", "left_text", "label"])
def test_forbidden_and_invisible_characters_are_refused(name, char):
    query = urllib.parse.urlencode({"page_id": "x", name: "a" + char + "b"})
    with pytest.raises(ParamError, match=f"invalid {name}"):
        parse(query)


@pytest.mark.parametrize("page_id", [" ", "   ", "\u3000", "\u00a0 "])
def test_a_page_id_of_whitespace_only_is_refused(page_id):
    with pytest.raises(ParamError, match="empty page_id"):
        parse(urllib.parse.urlencode({"page_id": page_id}))


@pytest.mark.parametrize("text", ["👨\u200d👩\u200d👧 family", "می\u200cخواهم",
                                  "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"])
def test_joiners_and_emoji_tags_that_scripts_need_are_kept(text):
    q = parse(urllib.parse.urlencode({"page_id": text, "left_text": text}))
    assert q.page_id == text and q.look.label == text


@pytest.mark.parametrize("color", ["rgb(٣٣,0,0)", "rgb(１,2,3)", "hsl(١٢٠,50%,50%)",
                                   "rgba(1,2,3,٠.5)", "rgb(1,2,\u20073)"])
@pytest.mark.parametrize("name", ["left_color", "color"])
def test_colours_take_ascii_digits_only(name, color):
    with pytest.raises(ParamError, match=f"invalid {name}"):
        parse(urllib.parse.urlencode({"page_id": "x", name: color}))


@pytest.mark.parametrize("value, ok", [(str(params.TOTAL_MAX), True),
                                       (str(params.TOTAL_MAX + 1), False),
                                       ("9223372036854775807", False), ("٣", False)])
def test_counts_stop_at_the_cap(value, ok):
    if ok:
        assert params.parse_count(value) == params.TOTAL_MAX
    else:
        with pytest.raises(ParamError):
            params.parse_count(value)


def test_the_cap_plus_the_largest_base_stays_an_exact_json_integer():
    assert params.TOTAL_MAX + params.BASE_MAX < 2**53
    assert float(params.TOTAL_MAX + params.BASE_MAX) == params.TOTAL_MAX + params.BASE_MAX


@settings(max_examples=500, deadline=None)
@given(hostile_text(st))
def test_every_accepted_page_id_and_label_is_xml_text(text):
    for name in ("page_id", "left_text"):
        query = urllib.parse.urlencode({"page_id": "x", name: text} if name != "page_id"
                                       else {"page_id": text})
        try:
            q = parse(query)
        except ParamError:
            continue
        accepted = q.page_id if name == "page_id" else q.look.label
        ET.fromstring(f"<t>{html.escape(accepted)}</t>")  # XML 1.0 refuses what it forbids
        assert not accepted.isspace() or name != "page_id"
