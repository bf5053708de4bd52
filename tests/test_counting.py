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


# The inflation guard's rule (issue 30), on the traces ################
# An injected clock: seconds, day = now // DAY_S. A page's history is what the
# guard decided on the days before (a day with held views is marked so).

DAY = counting.DAY_S
START = 20_000 * DAY  # a UTC midnight


class Page:
    """One page's days as a store would hold them: views counted and held."""

    def __init__(self, usual: int = 0, days: int = 14):
        self.days = {int(START // DAY) - back: [usual, 0] for back in range(1, days + 1)}
        self.genuine = self.loop_counted = 0

    def history(self, page_id):
        today = max(self.days)
        return self.days[today][0], [tuple(self.days[d]) for d in sorted(self.days, reverse=True)
                                     if d < today]

    def view(self, guard, now, genuine):
        day = int(now // DAY)
        self.days.setdefault(day, [0, 0])
        counted = admits(guard, "page", now, self.history)
        self.days[day][0 if counted else 1] += 1
        if genuine:
            self.genuine += 1
        elif counted:
            self.loop_counted += 1
        return counted


def admits(guard, page_id, now, history=lambda page_id: (0, [])):
    """The guard's word, given the page's history when it asks (as answers.py does)."""
    return guard.admits(page_id, now, history(page_id) if guard.needs(page_id, now) else None)


def run(page, guard, seconds, loop_rate, genuine_a_day, start=START):
    """Views in time order: a loop at loop_rate a second beside genuine ones
    spread evenly at genuine_a_day; (counted, held) of the loop's views."""
    events = [(start + i / loop_rate, False) for i in range(int(seconds * loop_rate))]
    events += [(start + i * DAY / genuine_a_day, True)
               for i in range(int(seconds * genuine_a_day / DAY))]
    counted = held = 0
    for now, genuine in sorted(events):
        if page.view(guard, now, genuine):
            counted += not genuine
        else:
            held += not genuine
    return counted, held


def test_a_loop_at_full_speed_on_a_quiet_page_is_held():
    # 30 s at 3,500 views a second (wrk through Camo's User-Agent measured
    # about that on this machine) on a page of 1,000 views a day.
    page = Page(usual=1000)
    counted, held = run(page, counting.Guard(), 30, 3500, 1000)
    assert counted <= 150 and held >= 0.99 * (counted + held)


def test_a_slow_loop_passes_neither_the_minute_nor_the_day():
    page = Page(usual=1000)
    counted, _ = run(page, counting.Guard(), 600, 1, 1000)  # 1 a second, 10 min
    assert counted <= 200


def test_a_loop_kept_up_for_a_week_does_not_raise_its_own_allowance():
    page = Page(usual=1000)
    guard = counting.Guard()
    first = guard.allowance(counting.usual_day(page.history("page")[1]))
    for day in range(7):
        run(page, guard, DAY, 1, 1000, start=START + day * DAY)
    week = [page.days[int(START // DAY) + d] for d in range(7)]
    genuine = page.genuine
    assert sum(counted for counted, _ in week) <= 3 * genuine
    assert guard.allowance(counting.usual_day(page.history("page")[1])) <= first
    assert all(held for _, held in week)  # every loop day is left out of the estimate


def test_a_genuine_surge_on_a_busy_page_is_counted():
    # 5 times a busy page's usual rate (100,000 a day: about 6 a second) for 40 s.
    page = Page(usual=100_000)
    counted, held = run(page, counting.Guard(), 40, 5 * 100_000 / DAY, 0)
    assert held <= 0.001 * (counted + held) and counted > 0


def test_a_new_page_counts_its_first_views_up_to_the_burst():
    page = Page(usual=0, days=0)
    page.days[int(START // DAY)] = [0, 0]
    guard = counting.Guard(burst=60)
    assert [page.view(guard, START + i, True) for i in range(60)] == [True] * 60
    assert not page.view(guard, START + 60, True)


def test_a_page_pushed_out_of_the_table_gets_no_second_day_bound():
    page = Page(usual=1000)
    guard = counting.Guard(size=2)
    now, counted = START, 0
    for i in range(20_000):  # a loop, with two other pages pushing it out each time
        now += 0.5
        if page.view(guard, now, False):
            counted += 1
        admits(guard, "other-1", now)
        admits(guard, "other-2", now)
    # The day's bound (twice the usual day) holds, though each return
    # begins a full minute's bucket.
    assert len(guard._pages) <= 2
    assert page.days[int(START // DAY)][0] <= counting.DAY_FACTOR * 1000


def test_the_usual_day_leaves_out_days_with_held_views():
    # Two weeks of a loop's days (each with held views), then genuine ones.
    assert counting.usual_day([(2000, 3)] * 14 + [(1000, 0)] * 7) == 1000
    # One week cannot raise it: the lower of two weeks' medians.
    assert counting.usual_day([(5000, 0)] * 7 + [(1000, 0)] * 7) == 1000
    assert counting.usual_day([(0, 0)] * 7) == 0  # a quiet page: the floor applies
    assert counting.Guard().allowance(None) == (600, 600)
