"""github.py: GitHub's traffic numbers synced from a local HTTP server that
speaks GitHub's documented REST shapes (tests/github_api.py), into both
stores. The clock is injected (now=...), and the fake's "today" moves with
it: days pass without sleeping."""

from __future__ import annotations

import datetime
import logging
import os
import threading

import pytest

import config
import github
import pages
import storage
from github_api import TOKEN, history

FIRST = datetime.date(2026, 1, 1)


def at(day: datetime.date, hour: int = 12) -> datetime.datetime:
    return datetime.datetime(day.year, day.month, day.day, hour, tzinfo=datetime.timezone.utc)


def settings(fake, **more) -> config.Config:
    return config.Config(github_api=fake.url, github_token=TOKEN, github_timeout=2, **more)


def sync_on(store, fake, day: datetime.date, **more) -> list[github.Outcome]:
    """A sync on that day, GitHub's window ending on it too."""
    fake.today = day
    return github.sync_pass(store, settings(fake, **more), at(day), due_only=False)


@pytest.fixture
def kept(any_store, fake_github):
    """alice/repo with 40 days of traffic on GitHub, kept from FIRST + 13."""
    fake_github.histories["alice/repo"] = history(FIRST, 40)
    any_store.github.add("alice/repo", None, at(FIRST))
    return any_store


def test_daily_syncs_keep_every_day_of_a_40_day_history(kept, fake_github):
    for n in range(13, 40):
        assert [o.status for o in sync_on(kept, fake_github, FIRST + datetime.timedelta(days=n))] == ["ok"]
    served = fake_github.histories["alice/repo"]
    traffic = kept.github.traffic("alice/repo", at(FIRST + datetime.timedelta(days=39)))
    assert traffic.views == sum(v[0] for v in served.values()) == sum(range(1, 41))
    assert traffic.visitors == sum(v[1] for v in served.values())
    assert traffic.clones == sum(v[2] for v in served.values())
    assert traffic.first_day == FIRST.isoformat()
    assert kept.github.lost("alice/repo") == 0
    assert kept.github.repos()[0].days == 40


def test_the_same_day_synced_twice_is_not_added_twice(kept, fake_github):
    day = FIRST + datetime.timedelta(days=20)
    sync_on(kept, fake_github, day)
    once = kept.github.traffic("alice/repo", at(day))
    sync_on(kept, fake_github, day)
    assert kept.github.traffic("alice/repo", at(day)) == once


def test_todays_number_revised_upward_replaces_the_kept_one(kept, fake_github):
    day = FIRST + datetime.timedelta(days=20)
    sync_on(kept, fake_github, day)
    before = kept.github.traffic("alice/repo", at(day))
    served = fake_github.histories["alice/repo"]
    served[day.isoformat()] = (served[day.isoformat()][0] + 7, served[day.isoformat()][1] + 2, 0, 0)
    sync_on(kept, fake_github, day)
    after = kept.github.traffic("alice/repo", at(day))
    assert after.views_today == before.views_today + 7
    assert after.views == before.views + 7 and after.visitors == before.visitors + 2


def test_days_without_views_are_kept_as_zeros_within_the_window(kept, fake_github):
    fake_github.histories["alice/repo"] = {FIRST.isoformat(): (3, 2, 0, 0)}
    sync_on(kept, fake_github, FIRST + datetime.timedelta(days=5))
    days = kept.github.days("alice/repo", "2000-01-01", "2100-01-01")
    assert days[FIRST.isoformat()].views == 3
    assert days[(FIRST + datetime.timedelta(days=5)).isoformat()] == storage.TrafficDay(0, 0, 0, 0)
    assert kept.github.lost("alice/repo") == 0


@pytest.mark.parametrize("pause, lost", [(13, 0), (14, 0), (15, 1), (20, 6)])
def test_a_pause_loses_only_the_days_that_left_githubs_window(kept, fake_github, pause, lost):
    first_sync = FIRST + datetime.timedelta(days=13)
    sync_on(kept, fake_github, first_sync)
    sync_on(kept, fake_github, first_sync + datetime.timedelta(days=pause))
    assert kept.github.lost("alice/repo") == lost
    assert kept.github.repos()[0].lost == lost
    states = [state for _, state, _ in kept.github.history(
        "alice/repo", 40, at(first_sync + datetime.timedelta(days=pause)))]
    assert states.count("lost") == lost
    # A lost day has no numbers: the sums are exactly the days seen.
    seen = kept.github.days("alice/repo", "2000-01-01", "2100-01-01")
    served = fake_github.histories["alice/repo"]
    assert kept.github.traffic("alice/repo").views == sum(served[d][0] for d in seen if d in served)


def test_history_marks_days_before_keeping_began_as_not_kept(kept, fake_github):
    day = FIRST + datetime.timedelta(days=13)
    sync_on(kept, fake_github, day)
    history_ = kept.github.history("alice/repo", 20, at(day))
    assert [s for _, s, _ in history_[:6]] == ["not kept"] * 6
    assert all(s == "kept" for _, s, _ in history_[6:])
    assert history_[-1][2].views == 14


@pytest.mark.parametrize("failure, status", [
    ("401", "token refused"), ("403", "no push access"), ("404", "not found"),
    ("rate", "rate limited"), ("spent", "rate limited"), ("429", "rate limited"),
    ("500", "GitHub error 500"),
    ("hang", "timed out"), ("malformed", "bad answer")])
def test_each_failure_has_its_status_and_the_kept_numbers_stay(kept, fake_github, failure, status,
                                                               caplog):
    day = FIRST + datetime.timedelta(days=20)
    sync_on(kept, fake_github, day)
    before = kept.github.traffic("alice/repo", at(day))
    if failure == "401":
        fake_github.token = "another"
    else:
        fake_github.failures["alice/repo"] = failure
    fake_github.hang_s = 4
    with caplog.at_level(logging.WARNING, logger="tally"):
        for _ in range(3):
            outcomes = sync_on(kept, fake_github, day)
    assert [o.status for o in outcomes] == [status]
    assert kept.github.repos()[0].status == status
    assert kept.github.traffic("alice/repo", at(day)) == before
    # Logged once, when the state began: not once per try.
    assert sum(status in r.getMessage() for r in caplog.records) == 1
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_a_rate_limit_is_honoured_until_githubs_reset(kept, fake_github):
    fake_github.failures["alice/repo"] = "429"
    fake_github.retry_after = 3600
    now = storage.utc_now()
    github.sync_pass(kept, settings(fake_github), now, due_only=False)
    state = kept.github.repos()[0]
    assert state.status == "rate limited"
    assert state.next_sync_at >= storage.stamp(now + datetime.timedelta(seconds=3590))
    asked = len(fake_github.requests)
    # Neither the server's pass nor a forced one asks before the reset.
    assert github.sync_pass(kept, settings(fake_github), now) == []
    forced = github.sync_pass(kept, settings(fake_github), now, due_only=False)
    assert [o.status for o in forced] == ["rate limited"]
    assert len(fake_github.requests) == asked


def test_githubs_own_trouble_backs_off_and_grows(kept, fake_github):
    fake_github.failures["alice/repo"] = "500"
    now = at(FIRST + datetime.timedelta(days=13))
    waits = []
    for _ in range(4):
        outcome = github.sync_pass(kept, settings(fake_github), now, due_only=False)[0]
        waits.append(datetime.datetime.strptime(outcome.retry_at, "%Y-%m-%dT%H:%M:%SZ")
                     .replace(tzinfo=datetime.timezone.utc) - now)
    assert waits == [datetime.timedelta(minutes=m) for m in (1, 2, 4, 8)]


def test_a_refused_token_ends_the_pass_without_asking_for_the_rest(any_store, fake_github):
    for name in ("alice/a", "alice/b", "alice/c"):
        fake_github.histories[name] = history(FIRST, 20)
        any_store.github.add(name, None, at(FIRST))
    fake_github.token = "another"
    outcomes = sync_on(any_store, fake_github, FIRST + datetime.timedelta(days=19))
    assert [o.status for o in outcomes] == ["token refused"] * 3
    assert len(fake_github.requests) == 1


def test_the_server_does_not_ask_again_with_a_refused_token_until_it_changes(
        any_store, fake_github, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("wrong-token\n")
    fake_github.histories["alice/repo"] = history(FIRST, 20)
    any_store.github.add("alice/repo", None, at(FIRST))
    cfg = config.Config(github_api=fake_github.url, github_token_file=str(token_file),
                        github_timeout=2)
    syncer = github.Syncer(any_store, cfg, tick=0.05).start()
    try:
        wait = threading.Event()
        for _ in range(100):
            if any_store.github.repos()[0].status == "token refused":
                break
            wait.wait(0.05)
        wait.wait(0.5)  # ten more ticks
        assert len(fake_github.requests) == 1
        token_file.write_text(TOKEN + "\n")  # the owner replaces the token
        for _ in range(100):
            if any_store.github.repos()[0].status == "ok":
                break
            wait.wait(0.05)
        assert any_store.github.repos()[0].status == "ok"
    finally:
        syncer.stop()


def test_no_token_is_a_status_not_a_crash(kept, fake_github):
    cfg = config.Config(github_api=fake_github.url, github_timeout=2)
    outcomes = github.sync_pass(kept, cfg, at(FIRST + datetime.timedelta(days=13)), due_only=False)
    assert [o.status for o in outcomes] == ["no token"] and fake_github.requests == []


def test_requests_carry_githubs_documented_headers(kept, fake_github):
    sync_on(kept, fake_github, FIRST + datetime.timedelta(days=13))
    paths = [path for path, _ in fake_github.requests]
    assert paths == ["/repos/alice/repo/traffic/views?per=day",
                     "/repos/alice/repo/traffic/clones?per=day",
                     "/repos/alice/repo/traffic/popular/referrers",
                     "/repos/alice/repo/traffic/popular/paths"]
    headers = fake_github.requests[0][1]
    assert headers["Accept"] == "application/vnd.github+json"
    assert headers["X-Github-Api-Version"] == github.API_VERSION
    assert headers["Authorization"] == f"Bearer {TOKEN}"


def test_an_enterprise_server_base_path_is_kept(kept, fake_github):
    fake = settings(fake_github)
    cfg = config.Config(github_api=fake.github_api + "/api/v3/", github_token=TOKEN)
    client = github.Client(cfg.github_api, TOKEN, 2)
    with pytest.raises(github.GitHubError):  # the fake serves no /api/v3 prefix: 404
        client.get("/repos/alice/repo/traffic/views?per=day")
    assert fake_github.requests[-1][0] == "/api/v3/repos/alice/repo/traffic/views?per=day"


def test_referrers_and_paths_are_kept_per_sync_day(kept, fake_github):
    day = FIRST + datetime.timedelta(days=13)
    sync_on(kept, fake_github, day)
    fake_github.referrers["alice/repo"] = [{"referrer": "example.org", "count": 9, "uniques": 1}]
    sync_on(kept, fake_github, day + datetime.timedelta(days=1))
    latest_day, latest = kept.github.popular("alice/repo")
    assert latest_day == (day + datetime.timedelta(days=1)).isoformat()
    assert [(p.kind, p.name) for p in latest] == [("referrer", "example.org"),
                                                  ("path", "/alice/repo")]
    exported = {k.repo: k for k in kept.github.kept()}["alice/repo"]
    assert sorted(exported.popular) == [day.isoformat(), latest_day]
    assert [p.name for p in exported.popular[day.isoformat()] if p.kind == "referrer"] == [
        "github.com", "news.ycombinator.com"]


def test_one_of_two_servers_on_one_database_claims_a_sync(make_store):
    first, second = make_store(), make_store()
    now = at(FIRST)
    first.github.add("alice/repo", None, now)
    seen = first.github.repos()[0]
    claims = [first.github.claim("alice/repo", now, github.LEASE, seen=seen),
              second.github.claim("alice/repo", now, github.LEASE, seen=seen)]
    assert sorted(claims) == [False, True]
    # A holder that died: its lease runs out and another takes it.
    later = now + github.LEASE + datetime.timedelta(seconds=1)
    assert second.github.claim("alice/repo", later, github.LEASE, seen=seen)


def test_a_server_that_read_a_repository_before_another_synced_it_leaves_it(kept, fake_github):
    day = FIRST + datetime.timedelta(days=13)
    seen = kept.github.repos()[0]
    sync_on(kept, fake_github, day)
    assert not kept.github.claim("alice/repo", at(day), github.LEASE, seen=seen)


def test_a_repository_removed_keeps_its_numbers_unless_deleted(kept, fake_github):
    sync_on(kept, fake_github, FIRST + datetime.timedelta(days=13))
    kept.github.remove("alice/repo", delete=False)
    assert kept.github.repos() == []
    assert kept.github.traffic("alice/repo").views == sum(range(1, 15))
    kept.github.remove("alice/repo", delete=True)
    assert kept.github.traffic("alice/repo") is None
    with pytest.raises(storage.NotFound):
        kept.github.remove("alice/repo", delete=True)


@pytest.mark.parametrize("token", ["", "two words", "tab\there", "ünïcode"])
def test_a_token_that_cannot_be_a_header_is_refused_without_quoting_it(token):
    with pytest.raises(config.ConfigError) as error:
        github.read_token(config.Config(github_token=token or " "))
    assert "TALLY_GITHUB_TOKEN" in str(error.value)
    assert not token.strip() or token not in str(error.value)


def test_the_token_is_never_in_a_configs_repr():
    assert TOKEN not in repr(config.Config(github_token=TOKEN))


def test_a_redirect_to_another_host_is_not_followed(fake_github):
    import http.server

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(301)
            self.send_header("Location", "http://localhost:9/steal")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass
    server = http.server.HTTPServer(("127.0.0.1", 0), Elsewhere)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    client = github.Client(f"http://127.0.0.1:{server.server_address[1]}", TOKEN, 2)
    with pytest.raises(github.GitHubError) as error:
        client.get("/repos/a/b/traffic/views")
    assert error.value.status == "bad answer"
    thread.join()
    server.server_close()


# Hardening, round four ######################################################


def kept_days(store) -> dict[str, storage.TrafficDay]:
    return store.github.days("alice/repo", "2000-01-01", "2100-01-01")


@pytest.mark.parametrize("behind", [datetime.timedelta(minutes=1), datetime.timedelta(hours=1),
                                    datetime.timedelta(days=3), datetime.timedelta(days=365)],
                         ids=["a minute", "an hour", "three days", "a year"])
def test_a_clock_behind_githubs_never_zeros_a_kept_day(kept, fake_github, behind):
    for n in range(13, 21):
        sync_on(kept, fake_github, FIRST + datetime.timedelta(days=n))
    before = kept_days(kept)
    assert len(before) == 21 and all(d.views for d in before.values())
    # GitHub's day has just begun; this box's clock is behind it.
    github_day = FIRST + datetime.timedelta(days=21)
    fake_github.today = github_day
    fake_github.date = f"{github_day:%a, %d %b %Y} 00:00:30 GMT"
    github_now = datetime.datetime(github_day.year, github_day.month, github_day.day, 0, 0, 30,
                                   tzinfo=datetime.timezone.utc)
    outcomes = github.sync_pass(kept, settings(fake_github), github_now - behind, due_only=False)
    assert [o.status for o in outcomes] == ["ok"]
    after = kept_days(kept)
    assert {day: after[day] for day in before} == before
    served = fake_github.histories["alice/repo"]
    assert kept.github.traffic("alice/repo").views == sum(
        served[day][0] for day in sorted(served)[:22])


def test_a_day_github_leaves_out_is_zero_only_where_nothing_was_kept(kept, fake_github):
    day = FIRST + datetime.timedelta(days=13)
    sync_on(kept, fake_github, day)
    left_out = (day - datetime.timedelta(days=5)).isoformat()
    never_seen = (FIRST + datetime.timedelta(days=14)).isoformat()
    served = fake_github.histories["alice/repo"]
    served[never_seen] = (0, 0, 0, 0)  # no views: GitHub leaves it out
    del served[left_out]  # an answer that leaves out a day it has
    sync_on(kept, fake_github, day + datetime.timedelta(days=1))
    days = kept_days(kept)
    assert days[left_out].views == 9  # the kept number, not an implied zero
    assert days[never_seen] == storage.TrafficDay(0, 0, 0, 0)


@pytest.mark.parametrize("date", ["", "not a date", "Mon, 01 Jan 0001 00:00:00 GMT",
                                  "Fri, 31 Dec 9999 23:59:59 GMT",
                                  "Mon, 05 Jan 2026 12:00:00 +9999"])
def test_an_answer_without_a_date_githubs_can_have_is_bad_and_writes_nothing(kept, fake_github,
                                                                              date):
    fake_github.date = date
    outcomes = sync_on(kept, fake_github, FIRST + datetime.timedelta(days=13))
    assert [o.status for o in outcomes] == ["bad answer"]
    assert kept_days(kept) == {}


@pytest.mark.parametrize("timestamp, count", [
    ("0001-01-01T00:00:00Z", 1), ("9999-12-31T00:00:00Z", 1), ("2025-01-01T00:00:00Z", 1),
    ("2026-02-01T00:00:00Z", 1), ("2026-01-10T00:00:00Z", 10**10 + 1),
    ("2026-01-10T00:00:00Z", 9 * 10**15)],
    ids=["year 1", "year 9999", "before the window", "after GitHub's day", "too many",
         "the total cap"])
def test_a_day_outside_githubs_window_or_past_its_counts_is_a_bad_answer(kept, fake_github,
                                                                         timestamp, count):
    fake_github.extra["alice/repo"] = [{"timestamp": timestamp, "count": count, "uniques": 1}]
    outcomes = sync_on(kept, fake_github, FIRST + datetime.timedelta(days=13))
    assert [o.status for o in outcomes] == ["bad answer"]
    assert kept_days(kept) == {}
    assert kept.github.traffic("alice/repo").views == 0


def test_one_deadline_bounds_an_answer_that_drips(kept, fake_github):
    fake_github.failures["alice/repo"] = "drip"
    fake_github.drip_s = 0.5  # each read is quick; the whole answer is not
    started = datetime.datetime.now()
    outcome = github.sync_pass(kept, config.Config(github_api=fake_github.url, github_token=TOKEN,
                                                   github_timeout=1),
                               at(FIRST + datetime.timedelta(days=13)), due_only=False)[0]
    took = (datetime.datetime.now() - started).total_seconds()
    assert outcome.status == "timed out"
    assert took < 12  # the answer takes 23 s; 1 s of timeout is the bound (and a busy machine's margin)


@pytest.mark.parametrize("headers", [
    {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, {"Retry-After": "99999999"},
    {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "99999999999"}],
    ids=["a date in 9999", "three years of seconds", "a reset in 5138"])
def test_every_back_off_github_asks_for_is_capped_at_an_hour(kept, fake_github, headers):
    fake_github.failures["alice/repo"] = "429"
    fake_github.headers = headers
    now = storage.utc_now()
    github.sync_pass(kept, settings(fake_github), now, due_only=False)
    state = kept.github.repos()[0]
    assert state.status == "rate limited"
    assert now < github._moment(state.next_sync_at) <= now + github.RETRY_CAP


@pytest.mark.parametrize("headers", [
    {"Retry-After": "²"}, {"Retry-After": "9" * 5000},
    {"Retry-After": "Mon, 05 Jan 2026 12:00:00 +9999"},
    {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "9" * 5000},
    {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "¹²"}])
def test_crafted_rate_limit_headers_back_off_and_leave_the_repository_free(kept, fake_github,
                                                                         headers):
    fake_github.failures["alice/repo"] = "rate"
    fake_github.headers = headers
    now = at(FIRST + datetime.timedelta(days=13))
    outcomes = github.sync_pass(kept, settings(fake_github), now, due_only=False)
    assert [o.status for o in outcomes] == ["rate limited"]
    state = kept.github.repos()[0]
    assert now < github._moment(state.next_sync_at) <= now + github.RETRY_CAP
    # Not left claimed: no "another server is syncing" for ten minutes.
    assert kept.github.claim("alice/repo", now, github.LEASE)


def test_a_bug_during_a_sync_leaves_the_repository_free(kept, fake_github, monkeypatch, caplog):
    def broken(self, repo):
        raise KeyError("a bug")
    monkeypatch.setattr(github.Client, "traffic", broken)
    outcomes = sync_on(kept, fake_github, FIRST + datetime.timedelta(days=13))
    assert [o.status for o in outcomes] == ["internal error"]
    assert kept.github.claim("alice/repo", at(FIRST + datetime.timedelta(days=13)), github.LEASE)
    assert "KeyError" in caplog.text


def test_the_interval_in_force_decides_when_a_repository_is_due(kept, fake_github):
    day = FIRST + datetime.timedelta(days=13)
    sync_on(kept, fake_github, day)  # the default interval: next in 6 hours
    fast = settings(fake_github, github_sync_hours=0.5)
    asked = len(fake_github.requests)
    assert github.sync_pass(kept, fast, at(day) + datetime.timedelta(minutes=20)) == []
    outcomes = github.sync_pass(kept, fast, at(day) + datetime.timedelta(minutes=31))
    assert [o.status for o in outcomes] == ["ok"]
    assert len(fake_github.requests) == asked + 4


@pytest.mark.parametrize("ahead", [datetime.timedelta(days=1), datetime.timedelta(days=365)])
def test_a_schedule_set_by_a_clock_ahead_corrects_itself_with_the_clock(kept, fake_github,
                                                                        ahead):
    day = FIRST + datetime.timedelta(days=13)
    fake_github.today = day
    github.sync_pass(kept, settings(fake_github), at(day) + ahead, due_only=False)
    assert github._moment(kept.github.repos()[0].next_sync_at) > at(day) + ahead
    # The clock is right again: due at once, not a year later.
    assert [o.status for o in github.sync_pass(kept, settings(fake_github), at(day))] == ["ok"]
    assert kept.github.lost("alice/repo") == 0


def test_a_token_file_that_is_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    with pytest.raises(config.ConfigError, match="not a regular file"):
        github.read_token(config.Config(github_token_file=str(fifo)))


# GitHub confirms or refutes the inflation guard's held views (issue 30) ######


def test_a_sync_releases_the_held_views_that_githubs_own_views_explain(any_store, fake_github):
    day = FIRST + datetime.timedelta(days=20)
    confirmed, refuted, partly = (FIRST + datetime.timedelta(days=n) for n in (17, 18, 19))
    # GitHub saw 500 views of the README on `confirmed`, 500 on `refuted`,
    # 300 on `partly`; Tally counted 100 each day and held 400, 4000, 250.
    fake_github.histories["alice/repo"] = {
        confirmed.isoformat(): (500, 200, 0, 0), refuted.isoformat(): (500, 200, 0, 0),
        partly.isoformat(): (300, 100, 0, 0)}
    any_store.github.add("alice/repo", "alice.repo", at(FIRST))
    for when, held in ((confirmed, 400), (refuted, 4000), (partly, 250)):
        for _ in range(100):
            any_store.record_view("alice.repo", at(when))
        for _ in range(held):
            any_store.record_view("alice.repo", at(when), held=True)
    assert [o.released for o in sync_on(any_store, fake_github, day)] == [400]
    page = any_store.page("alice.repo")
    # counted + held <= GitHub's views: 100 + 400 <= 500 released; 100 +
    # 4000 > 500 and 100 + 250 > 300 stay held, whole (never a part of a day).
    assert page.days[confirmed.isoformat()] == 500 and page.total == 700
    assert page.held_days == {refuted.isoformat(): 4000, partly.isoformat(): 250}
    assert page.held == 4250
    # Synced again: nothing more to release, nothing released twice.
    assert [o.released for o in sync_on(any_store, fake_github, day)] == [0]
    assert any_store.page("alice.repo").total == 700


def test_a_repository_without_a_linked_page_releases_nothing(any_store, fake_github):
    day = FIRST + datetime.timedelta(days=20)
    fake_github.histories["alice/repo"] = {day.isoformat(): (10_000, 10, 0, 0)}
    any_store.github.add("alice/repo", None, at(FIRST))
    any_store.record_view("alice.repo", at(day), held=True)
    assert [o.released for o in sync_on(any_store, fake_github, day)] == [0]
    assert any_store.page("alice.repo").held == 1


def test_a_github_chart_draws_githubs_views_and_uniques_per_day(kept, fake_github):
    day = FIRST + datetime.timedelta(days=20)
    sync_on(kept, fake_github, day)  # GitHub's 14 days to day 20: days 7..20 kept
    served = fake_github.histories["alice/repo"]
    page = pages.github("alice/repo")
    found = pages.chart_days(kept, page, 21, now=at(day))
    kept_days = [d for d, _ in found.days if d not in found.not_kept]
    assert len(found.not_kept) == 7 and len(kept_days) == 14
    assert [n for d, n in found.days if d in kept_days] == [served[d][0] for d in kept_days]
    assert found.total == sum(served[d][0] for d in kept_days) and found.empty is None
    uniques = pages.chart_days(kept, page, 21, visitors=True, now=at(day))
    assert [n for d, n in uniques.days if d in kept_days] == [served[d][1] for d in kept_days]
    assert pages.chart_days(kept, pages.github("alice/other"), 7).empty == "repository not kept"


# A README, for self-service's claims (issue 32) ###############################

def test_a_readme_is_read_within_the_deadline_and_the_size_limit(fake_github):
    client = github.Client(fake_github.url, None, 1)
    fake_github.readmes["alice/repo"] = "# Hello ✓\n"
    assert client.readme("alice/repo") == "# Hello ✓\n"
    assert "Authorization" not in fake_github.requests[-1][1]  # no token: public ones only
    fake_github.readmes["alice/big"] = "x" * github.MAX_ANSWER_BYTES
    fake_github.failures["alice/slow"] = "hang"
    fake_github.hang_s = 3
    fake_github.readmes["alice/slow"] = "never"
    for repo, status in (("alice/none", github.NOT_FOUND), ("alice/big", github.BAD_ANSWER),
                         ("alice/slow", github.TIMED_OUT)):
        with pytest.raises(github.GitHubError) as refused:
            client.readme(repo)
        assert refused.value.status == status, repo
