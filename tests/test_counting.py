"""counting.py: whether a view counts, and as what (what the store records)."""

from __future__ import annotations

import collections
import datetime
import json

import pytest

import counting
import storage
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


def test_without_enough_clean_days_the_counted_views_decide():
    # A new page whose readers are more than the floor: its days were held
    # in part, and there are not 7 without; their counted views then count
    # (each at most its day's bound), so the allowance grows from the floor.
    assert counting.usual_day([(1200, 3000)] * 3) == 1200
    assert counting.usual_day([(1200, 3000)] * 3 + [(500, 0)] * 6) == 500 + 0  # lower median
    # With 7 clean days the held days are left out.
    assert counting.usual_day([(9000, 50)] * 10 + [(1000, 0)] * 7) == 1000


def test_the_history_starts_at_the_pages_first_day():
    today, days = counting.history("2026-12-07", [("2026-12-05", 700, 0), ("2026-12-03", 800, 2)])
    assert today == 0 and days == [(0, 0), (700, 0), (0, 0), (800, 2)]
    assert counting.history("2026-12-07", []) == (0, [])


def test_admits_refuses_to_guess_a_history_it_was_not_given():
    with pytest.raises(ValueError):
        counting.Guard().admits("p", START)


def test_servers_sharing_a_database_share_one_pages_allowance():
    # Two servers' guards on one page, a loop alternating between them. The
    # database's count of today's views, which every recorded view's answer
    # carries, tells each what the other counted.
    guards, counted = [counting.Guard(), counting.Guard()], 0
    for n in range(600):
        guard, now = guards[n % 2], START + n * 0.05
        if admits(guard, "page", now, lambda p: (counted, [(1000, 0)] * 14)):
            counted += 1
            guard.observed("page", now, counted, True)
        else:
            guard.observed("page", now, counted, False)
    # One burst, not one a server, and 30 s of the minute's refill (ten
    # times 1,000 a day: 3.5).
    assert 60 <= counted <= 64

    # Without telling them (what the guard would do without observed()).
    alone, counted = [counting.Guard(), counting.Guard()], 0
    for n in range(600):
        if admits(alone[n % 2], "page", START + n * 0.05, lambda p: (0, [(1000, 0)] * 14)):
            counted += 1
    assert counted >= 120


def test_an_answer_out_of_order_takes_nothing_for_long():
    # A batch's answers may come before the views they count: an estimate
    # of other servers' views too high for a moment is given back.
    guard = counting.Guard(burst=10)
    assert all(admits(guard, "page", START) for _ in range(5))
    assert guard._pages["page"].minute.level(START) == 5
    guard.observed("page", START, 5, False)   # a held view's answer first: 5 look like others'
    assert guard._pages["page"].minute.level(START) == 0
    for n in range(1, 6):                     # then the five counted: this server's own
        guard.observed("page", START, n, True)
    assert guard._pages["page"].minute.level(START) == 5


# The guard through the app (in process): a loop on one page ##############


def held_run(client, page_id, n, user_agent=BROWSER):
    """n views of a page, as a person's browser asks (or as user_agent);
    how many answers said each thing."""
    said = collections.Counter()
    for _ in range(n):
        said[client.get("/badge", f"page_id={page_id}",
                        headers={"User-Agent": user_agent}).headers["x-tally-counted"]] += 1
    return said


def test_a_loop_on_a_new_page_counts_the_burst_and_holds_the_rest(make_client):
    client, store = make_client()
    said = held_run(client, "looped", 200)
    # The burst (60), and the floor's refill (600 a day: one in 144 s).
    assert 60 <= said["yes"] <= 61 and said["yes"] + said["no; held"] == 200
    body = json.loads(client.get("/api/count", "page_id=looped").body)
    assert (body["total"], body["held"], body["held_today"]) == (
        said["yes"], said["no; held"], said["no; held"])
    # A held view's badge shows the count without it.
    svg = client.get("/badge", "page_id=looped").body.decode()
    assert f">{said['yes']}<" in svg
    day = json.loads(client.get("/api/history", "page_id=looped&days=1").body)
    assert day["held"] == said["no; held"] + 1 and day["days"][0]["held"] == day["held"]
    stats = client.get("/stats", "page_id=looped").body.decode()
    assert f'id="held">{said["no; held"] + 1}<' in stats and 'id="held-note"' in stats


def test_with_the_guard_off_every_view_counts(make_client):
    client, store = make_client(guard=False)
    assert held_run(client, "looped", 200) == {"yes": 200}
    assert store.page("looped").held == 0


def test_counted_held_and_bot_views_add_up_to_the_views_answered(make_client):
    client, store = make_client()
    said = held_run(client, "p", 150) + held_run(client, "p", 40, "curl/8.5.0")
    assert said["no; bot"] == 40 and said["no; held"] > 0
    page, days = store.page("p"), store.days("p", 1)
    assert page.total + page.held + days[0].bots == 190
    assert (page.total, page.held) == (said["yes"], said["no; held"])


def test_a_page_with_history_gets_its_usual_rate(make_client):
    # 14 days of 100,000 views a day: the minute's bucket refills at ten
    # times that, and the day's bound is twice it; a page without days gets
    # the floor (600 a day) for both.
    client, store = make_client()
    today = datetime.datetime.now(datetime.timezone.utc).date()
    store.import_pages([storage.Page(
        "busy", 1_400_000, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
        {(today - datetime.timedelta(days=back)).isoformat(): 100_000
         for back in range(1, 15)})], "set")
    assert held_run(client, "busy", 1) == held_run(client, "quiet", 1) == {"yes": 1}
    guarded = client.app.badges.guard._pages
    assert guarded["busy"].minute.rate * counting.DAY_S == pytest.approx(1_000_000)
    assert guarded["busy"].whole_day.capacity == 200_000
    assert guarded["quiet"].minute.rate * counting.DAY_S == pytest.approx(600)
    assert guarded["quiet"].whole_day.capacity == 600
