"""counting.py: whether a view counts, and as what (what the store records)."""

from __future__ import annotations

import pytest

import counting
from config import Config
from conftest import BROWSER

CAMO = "github-camo (c006e452)"
ADDRESS = "198.51.100.7"


@pytest.mark.parametrize("settings, request_args, expected", [
    # (header, recorded, bot, view, visitor)
    ({}, {}, ("yes", True, False, True, (ADDRESS, BROWSER))),   # a person's browser
    ({"visitors": False}, {}, ("yes", True, False, True, None)),
    ({}, {"user_agent": CAMO}, ("yes", True, False, True, None)),  # a proxy hides its reader
    ({}, {"user_agent": "GoogleImageProxy"}, ("yes", True, False, True, None)),
    ({}, {"user_agent": "curl/8.5.0"}, ("no; bot", True, True, False, None)),
    ({"count_bots": True}, {"user_agent": "curl/8.5.0"}, ("yes; bot", True, True, True, None)),
    ({}, {"method": "HEAD"}, ("no; HEAD", False, False, False, None)),
    ({}, {"counts": False}, ("no; query_only", False, False, False, None)),
    ({}, {"counts": False, "read_only": "read only"}, ("no; read only", False, False, False, None)),
    ({"camo_only": True}, {}, ("no; camo-only", False, False, False, None)),
    ({"camo_only": True}, {"user_agent": CAMO}, ("yes", True, False, True, None)),
    ({}, {"camo_only": True}, ("no; camo-only", False, False, False, None)),  # komarev's rule
    ({}, {"camo_only": True, "user_agent": CAMO}, ("yes", True, False, True, None)),
])
def test_each_kind_of_view_is_decided_once(settings, request_args, expected):
    args = {"counts": True, "method": "GET", "user_agent": BROWSER, "client": ADDRESS,
            **request_args}
    decision = counting.decide(Config(**settings), **args)
    assert (decision.header, decision.recorded, decision.bot, decision.view,
            decision.visitor) == expected


def test_a_view_not_recorded_is_neither_a_view_nor_a_bots_view():
    decision = counting.not_counted("github page")
    assert decision.header == "no; github page"
    assert not (decision.recorded or decision.bot or decision.view or decision.visitor)
