"""owners.py: self-service for page owners (issue 32), through the real
server with TALLY_SELF_SERVICE=1, and GitHub's README through the local
stand-in of its REST API (tests/github_api.py) at TALLY_GITHUB_API. The
badge views that give a page views speak as a person's browser does
(conftest.with_browser)."""

from __future__ import annotations

import datetime
import json
import re
import sqlite3
import urllib.parse
from pathlib import Path

import pytest

import config
import owners
import storage
from conftest import tally
from stores import sqlite

ON = {"TALLY_SELF_SERVICE": "1"}


def count(server, page_id: str) -> int:
    return json.loads(server.get("/api/count?page_id=" + urllib.parse.quote(page_id))[2])["total"]


@pytest.fixture
def served(live_server, fake_github):
    return live_server({**ON, "TALLY_GITHUB_API": fake_github.url})


def new_counter(server, page_id: str) -> str:
    status, _, answer = server.post("/api/pages", {"page_id": page_id})
    assert status == 201 and answer["page_id"] == page_id
    return answer["owner_key"]


def test_off_by_default_changes_nothing(live_server, db_path):
    server = live_server()
    status, _, answer = server.post("/api/pages", {"page_id": "alice.repo"})
    assert status == 404 and answer["error"] == owners.OFF
    assert server.get("/manage")[0] == 404
    assert b"manage-link" not in server.get("/")[2]  # the builder offers no /manage
    assert server.post("/api/pages/set", {"page_id": "alice.repo", "total": 5}, "k")[0] == 404
    with sqlite.Store(db_path) as store:
        assert store.page_count() == 0 and store.owners.owners() == []


def test_a_new_counter_has_a_key_once_and_an_established_one_cannot_be_taken(served):
    key = new_counter(served, "alice.new")
    assert re.fullmatch(r"tally_[A-Za-z0-9_-]{43}", key)  # 32 random bytes: 256 bits
    assert count(served, "alice.new") == 0
    status, _, answer = served.post("/api/pages", {"page_id": "alice.new"})
    assert status == 409 and "owner_key" not in answer
    served.get("/badge?page_id=alice.viewed")  # a page with a view
    status, _, answer = served.post("/api/pages", {"page_id": "alice.viewed"})
    assert status == 409 and answer == {"error": "page_id has views or an owner already"}


def test_the_owner_sets_resets_exports_rotates_and_deletes_with_the_key(served, db_path):
    key = new_counter(served, "alice.mine")
    served.get("/badge?page_id=alice.mine")
    status, _, answer = served.post("/api/pages/set", {"page_id": "alice.mine", "total": 1234}, key)
    assert status == 200 and answer["total"] == 1234 and count(served, "alice.mine") == 1234
    status, _, exported = served.post("/api/pages/reset", {"page_id": "alice.mine"}, key)
    assert status == 200 and count(served, "alice.mine") == 0
    status, _, body = served.get("/api/pages/export?page_id=alice.mine",
                                 {"Authorization": f"Bearer {key}"})
    page = json.loads(body)["pages"][0]
    assert status == 200 and page["total"] == 0 and sum(page["days"].values()) == 1  # history kept
    status, _, answer = served.post("/api/pages/rotate", {"page_id": "alice.mine"}, key)
    new = answer["owner_key"]
    assert status == 200 and new != key
    assert served.post("/api/pages/set", {"page_id": "alice.mine", "total": 1}, key)[0] == 403
    status, _, answer = served.post("/api/pages/delete", {"page_id": "alice.mine"}, new)
    assert status == 200 and count(served, "alice.mine") == 0
    status, _, body = served.get("/api/pages/actions?page_id=alice.mine",
                                 {"Authorization": f"Bearer {new}"})
    assert [a["action"] for a in json.loads(body)["actions"]] == [
        "created", "set", "reset", "rotate", "delete"]
    # Never the key: neither in the database's files nor in the server's log.
    files = b"".join(p.read_bytes() for p in Path(db_path).parent.glob(Path(db_path).name + "*"))
    assert key.encode() not in files and new.encode() not in files
    assert owners.hashed(new).encode() in files
    log = Path(served.log).read_bytes()
    assert key.encode() not in log and new.encode() not in log


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic x"},
                                     {"Authorization": "Bearer tally_wrong"}])
def test_without_the_right_key_nothing_changes(served, headers):
    key = new_counter(served, "alice.kept")
    served.post("/api/pages/set", {"page_id": "alice.kept", "total": 7}, key)
    status, answered, body = owners_post(served, "/api/pages/set",
                                         {"page_id": "alice.kept", "total": 1}, headers)
    assert status == (401 if "tally_wrong" not in str(headers) else 403)
    assert "tally_" not in json.dumps(body) and count(served, "alice.kept") == 7


def owners_post(server, path, payload, headers):
    from conftest import fetch
    status, answered, data = fetch(server.url + path, {"Content-Type": "application/json",
                                                       **headers}, "POST",
                                   body=json.dumps(payload).encode())
    return status, answered, json.loads(data)


def test_a_guessing_loop_gets_429_and_the_page_keeps_its_count(served):
    key = new_counter(served, "alice.guarded")
    served.post("/api/pages/set", {"page_id": "alice.guarded", "total": 50}, key)
    said = [served.post("/api/pages/set", {"page_id": "alice.guarded", "total": 1},
                        f"tally_guess{i}")[0] for i in range(8)]
    assert said == [403] * owners.WRONG_KEYS_PER_MINUTE + [429] * 3
    status, answered, body = served.post("/api/pages/set", {"page_id": "alice.guarded",
                                                            "total": 1}, "tally_guess")
    assert status == 429 and 0 < int(answered["Retry-After"]) <= 60
    assert count(served, "alice.guarded") == 50
    # The same client guessing at another page is stopped too (per client).
    new_counter(served, "alice.other")
    assert served.post("/api/pages/set", {"page_id": "alice.other", "total": 1}, "x")[0] == 429


def test_new_counters_are_limited_per_client_and_by_the_page_cap(live_server, tmp_path):
    server = live_server({**ON, "TALLY_MAX_PAGES": "3"})
    said = [server.post("/api/pages", {"page_id": f"flood.{i}"})[0] for i in range(5)]
    assert said == [201, 201, 201, 409, 409]
    assert server.post("/api/pages", {"page_id": "flood.x"})[2]["error"] == "page limit reached"
    limited = live_server(ON, db=str(tmp_path / "other.db"))
    said = [limited.post("/api/pages", {"page_id": f"many.{i}"})[0]
            for i in range(owners.NEW_PAGES_PER_HOUR + 2)]
    assert said == [201] * owners.NEW_PAGES_PER_HOUR + [429, 429]


@pytest.mark.parametrize("payload, content_type, status, problem", [
    ({"page_id": "p", "total": 5}, "text/plain", 415, "Content-Type must be application/json"),
    (b"page_id=p&total=5", "application/x-www-form-urlencoded", 415,
     "Content-Type must be application/json"),
    (b"{not json", "application/json", 400, "body is not JSON"),
    ([1, 2], "application/json", 400, "body must be a JSON object"),
    ({"page_id": "p", "total": -1}, "application/json", 400, "invalid total"),
    ({"page_id": "p", "total": "5"}, "application/json", 400, "invalid total"),
    ({"page_id": "p", "total": 1.5}, "application/json", 400, "invalid total"),
    ({"page_id": "p", "total": True}, "application/json", 400, "invalid total"),
    ({"page_id": "p", "total": storage.TOTAL_MAX + 1}, "application/json", 400,
     f"total above {storage.TOTAL_MAX}"),
    ({"page_id": "p\x00", "total": 5}, "application/json", 400, "invalid page_id"),
    ({"page_id": 7, "total": 5}, "application/json", 400, "invalid page_id"),
    ({"total": 5}, "application/json", 400, "missing page_id"),
    ({"page_id": "github:alice/repo", "total": 5}, "application/json", 400,
     "a github: page has no owner (GitHub's numbers are GitHub's)"),
    (b"{" + b" " * owners.BODY_MAX + b"}", "application/json", 413, "request body too large"),
])
def test_bad_input_is_a_clear_json_error_and_changes_nothing(served, payload, content_type,
                                                             status, problem):
    key = new_counter(served, "p")
    served.post("/api/pages/set", {"page_id": "p", "total": 9}, key)
    answered = served.post("/api/pages/set", payload, key, content_type)
    assert answered[0] == status and answered[2] == {"error": problem}
    assert count(served, "p") == 9


# Claims proved by a README ####################################################

def readme(server, page_id: str, token: str | None, extra: str = "") -> str:
    badge = f"![visitors]({server.url}/badge?page_id={urllib.parse.quote(page_id)})"
    line = f"<!-- tally-claim: {token} -->" if token else ""
    return f"# My repo\n\n{badge}\n{line}\n{extra}\nSome text.\n"


def claim(server, page_id: str, repo: str = "alice/repo") -> str:
    status, _, answer = server.post("/api/claims", {"page_id": page_id, "repo": repo})
    assert status == 201 and answer["readme_line"] == f"<!-- tally-claim: {answer['claim_token']} -->"
    return answer["claim_token"]


@pytest.mark.parametrize("path, payload, problem", [
    ("/api/claims", {"page_id": "a.b", "repo": "not a repo"}, "invalid repo"),
    ("/api/claims", {"page_id": "a.b", "repo": 7}, "invalid repo"),
    ("/api/claims", {"page_id": "", "repo": "a/b"}, "empty page_id"),
    ("/api/claims/verify", {"page_id": "a.b", "repo": "a/b", "claim_token": "abc"},
     "invalid claim_token"),
    ("/api/claims/verify", {"page_id": "a.b", "repo": "a/b"}, "invalid claim_token"),
])
def test_a_bad_claim_is_a_clear_error(served, path, payload, problem):
    assert served.post(path, payload)[:3:2] == (400, {"error": problem})


def test_a_readme_proves_a_claim_and_the_squatters_key_stops(served, fake_github):
    served.get("/badge?page_id=alice.repo")
    squatter = new_counter(served, "alice.squatted")
    token = claim(served, "alice.squatted")
    fake_github.readmes["alice/repo"] = readme(served, "alice.squatted", token)
    status, _, answer = served.post("/api/claims/verify", {"page_id": "alice.squatted",
                                                           "repo": "Alice/Repo",
                                                           "claim_token": token})
    assert status == 201
    owner = answer["owner_key"]
    assert served.post("/api/pages/set", {"page_id": "alice.squatted", "total": 3}, squatter)[0] == 403
    assert served.post("/api/pages/set", {"page_id": "alice.squatted", "total": 3}, owner)[0] == 200
    # A token is used once.
    again = served.post("/api/claims/verify", {"page_id": "alice.squatted", "repo": "alice/repo",
                                               "claim_token": token})
    assert again[0] == 403
    # An old service's URL on this server that maps to the page proves it too.
    token = claim(served, "ghpvc:alice", "alice/alice")
    fake_github.readmes["alice/alice"] = (f"![views]({served.url}/ghpvc/?username=Alice)\n"
                                          f"<!-- tally-claim: {token} -->")
    assert served.post("/api/claims/verify", {"page_id": "ghpvc:alice", "repo": "alice/alice",
                                              "claim_token": token})[0] == 201


@pytest.mark.parametrize("case, problem", [
    ("no line", "the README does not hold the claim's line"),
    ("another page", "the README shows no badge of this page on this server"),
    ("another host", "the README shows no badge of this page on this server"),
    ("in code", "the README shows no badge of this page on this server"),
    ("no README", "GitHub cannot serve the README (not found)"),
    ("private", "GitHub cannot serve the README (not found)"),
    ("GitHub fails", "GitHub cannot serve the README (GitHub error 500)"),
    ("another repo", "no such claim for this page and repository"),
])
def test_a_claim_is_refused_with_its_reason(served, fake_github, case, problem):
    token = claim(served, "alice.claimed")
    text = {"no line": readme(served, "alice.claimed", None),
            "another page": readme(served, "bob.other", token),
            "another host": readme(served, "alice.claimed", token).replace("127.0.0.1", "localhost"),
            "in code": "```\n" + readme(served, "alice.claimed", token) + "\n```\n"
                       f"<!-- tally-claim: {token} -->"}.get(case, readme(served, "alice.claimed",
                                                                         token))
    if case != "no README":
        fake_github.readmes["alice/repo"] = text
    if case == "private":
        fake_github.private.add("alice/repo")
    if case == "GitHub fails":
        fake_github.failures["alice/repo"] = "500"
    status, _, answer = served.post("/api/claims/verify", {
        "page_id": "alice.claimed", "repo": "alice/other" if case == "another repo" else "alice/repo",
        "claim_token": token})
    assert (status, answer) == (403, {"error": problem})
    assert json.loads(served.get("/api/count?page_id=alice.claimed")[2])["total"] == 0


def test_a_private_readme_is_read_with_the_operators_token(live_server, fake_github):
    from github_api import TOKEN
    server = live_server({**ON, "TALLY_GITHUB_API": fake_github.url, "TALLY_GITHUB_TOKEN": TOKEN})
    token = claim(server, "alice.private")
    fake_github.readmes["alice/repo"] = readme(server, "alice.private", token)
    fake_github.private.add("alice/repo")
    assert server.post("/api/claims/verify", {"page_id": "alice.private", "repo": "alice/repo",
                                              "claim_token": token})[0] == 201


def test_an_expired_claim_is_refused(db_path):
    cfg = config.Config(db=db_path, self_service=True)
    with sqlite.Store(db_path) as store:
        service = owners.SelfService(cfg, store, None)
        then = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
        request = owners.Request("/api/claims", "POST", "application/json", "",
                                 json.dumps({"page_id": "a.b", "repo": "a/b"}).encode(), "1.2.3.4",
                                 "http://127.0.0.1")
        status, answer = service.answer(request, then)
        assert status == 201 and answer["expires_at"] == "2026-12-02T00:00:00Z"
        verify = owners.Request("/api/claims/verify", "POST", "application/json", "", json.dumps(
            {"page_id": "a.b", "repo": "a/b", "claim_token": answer["claim_token"]}).encode(),
            "1.2.3.4", "http://127.0.0.1")
        later = then + owners.CLAIM_LIFETIME + datetime.timedelta(seconds=1)
        assert service.answer(verify, later) == (403, {"error": "the claim expired; ask for a new one"})


def test_a_locked_page_unlocks_when_its_minute_ends(db_path):
    cfg = config.Config(db=db_path, self_service=True)
    with sqlite.Store(db_path) as store:
        service = owners.SelfService(cfg, store, None)
        now = datetime.datetime(2026, 12, 7, 12, 0, 5, tzinfo=datetime.timezone.utc)

        def post(path, body, key, client, at):
            return service.answer(owners.Request(path, "POST", "application/json",
                                                 f"Bearer {key}", json.dumps(body).encode(),
                                                 client, "http://127.0.0.1"), at)[0]
        key = service.answer(owners.Request("/api/pages", "POST", "application/json", "",
                                            b'{"page_id": "a.b"}', "9.9.9.9", "x"), now)[1]["owner_key"]
        for i in range(owners.WRONG_KEYS_PER_MINUTE):
            assert post("/api/pages/set", {"page_id": "a.b", "total": 1}, "bad", f"10.0.0.{i}",
                        now) == 403
        # Wrong keys from many clients lock the page for the minute, its owner too.
        assert post("/api/pages/set", {"page_id": "a.b", "total": 1}, key, "9.9.9.9", now) == 429
        nxt = now + datetime.timedelta(minutes=1)
        assert post("/api/pages/set", {"page_id": "a.b", "total": 1}, key, "9.9.9.9", nxt) == 200


def test_an_action_whose_record_cannot_be_written_changes_nothing(db_path):
    cfg = config.Config(db=db_path, self_service=True)
    with sqlite.Store(db_path) as store:
        service = owners.SelfService(cfg, store, None)
        now = datetime.datetime(2026, 12, 7, 12, tzinfo=datetime.timezone.utc)

        def post(path, body, key=""):
            return service.answer(owners.Request(path, "POST", "application/json",
                                                 f"Bearer {key}", json.dumps(body).encode(),
                                                 "9.9.9.9", "http://127.0.0.1"), now)
        key = post("/api/pages", {"page_id": "a.b"})[1]["owner_key"]
        assert post("/api/pages/set", {"page_id": "a.b", "total": 40}, key)[0] == 200
        # From now on the action log refuses every row, as a full disk would.
        with sqlite3.connect(db_path) as conn:
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON owner_actions "
                         "BEGIN SELECT RAISE(ABORT, 'no room'); END")
        for action, body in (("set", {"total": 7}), ("reset", {}), ("delete", {})):
            with pytest.raises(storage.StorageError):
                post(f"/api/pages/{action}", {"page_id": "a.b", **body}, key)
            # Not done without its record: undo would have nothing to put back.
            assert store.counts("a.b").total == 40
        assert [a.action for a in store.owners.actions("a.b")] == ["created", "set"]


# The operator's commands ######################################################

def test_the_operator_lists_shows_undoes_and_removes(served, db_path):
    key = new_counter(served, "alice.ops")
    for _ in range(3):
        served.get("/badge?page_id=alice.ops")
    served.post("/api/pages/set", {"page_id": "alice.ops", "total": 999}, key)
    served.post("/api/pages/delete", {"page_id": "alice.ops"}, key)
    listed = tally("owners", "list", db=db_path)
    assert listed.returncode == 0 and listed.stdout.startswith("alice.ops  key  since ")
    shown = tally("owners", "show", "alice.ops", db=db_path).stdout
    numbers = re.findall(r"#(\d+) .* (set|delete): .*\(owners undo \1\)", shown)
    assert [action for _, action in numbers] == ["set", "delete"]
    undone = tally("owners", "undo", numbers[1][0], db=db_path)
    assert undone.returncode == 0 and count(served, "alice.ops") == 999
    undone = tally("owners", "undo", numbers[0][0], db=db_path)
    assert undone.returncode == 0 and count(served, "alice.ops") == 3
    removed = tally("owners", "remove", "alice.ops", db=db_path)
    assert removed.returncode == 0
    assert served.post("/api/pages/set", {"page_id": "alice.ops", "total": 1}, key)[0] == 403
    assert tally("owners", "remove", "alice.ops", db=db_path).returncode == 2
    assert tally("owners", "undo", "9999", db=db_path).stderr == "tally: no action #9999\n"
    assert key not in shown + listed.stdout


# /manage in a real browser ####################################################

@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_manage_sets_a_total_in_a_browser(browser, served, javascript):
    page_id = f"alice.managed-{javascript}"
    key = new_counter(served, page_id)
    context = browser.new_context(java_script_enabled=javascript)
    page = context.new_page()
    page.goto(f"{served.url}/?page_id={page_id}")
    page.locator("#manage-link").click()  # the builder links to /manage when it is on
    page.wait_for_url(re.compile(r".*/manage\?page_id=.*"))
    assert page.get_by_label("Page id").input_value() == page_id
    assert page.get_by_label("Owner key").get_attribute("type") == "password"
    page.get_by_label("Owner key").fill(key)
    page.get_by_label('New total (for "Set the total")').fill("4321")
    page.get_by_role("button", name="Set the total").click()
    page.wait_for_load_state()
    assert page.locator("#done").text_content() == "The total is now 4,321."
    assert count(served, page_id) == 4321
    assert key not in page.url
    assert [t.strip() for t in page.locator("#actions tbody td:nth-child(2)").all_text_contents()] \
        == ["set", "created"]
    # A wrong key: refused, said so, nothing changed.
    page.get_by_label("Owner key").fill("tally_wrong")
    page.get_by_role("button", name="Reset to 0").click()
    page.wait_for_load_state()
    assert page.locator("#error").text_content() == "wrong key for this page"
    assert count(served, page_id) == 4321
    context.close()


def test_the_owner_counts_the_views_the_guard_held(served):
    key = new_counter(served, "alice.looped")
    said = [served.get("/badge?page_id=alice.looped")[1]["X-Tally-Counted"] for _ in range(80)]
    held = said.count("no; held")
    assert held >= 18  # a burst of 60 (docs/guard.md), then held
    status, _, answer = served.post("/api/pages/release", {"page_id": "alice.looped"}, key)
    assert status == 200 and sum(d["views"] for d in answer["released"]) == held
    assert count(served, "alice.looped") == 80
    served.post("/api/pages/delete", {"page_id": "alice.looped"}, key)
    assert served.post("/api/pages/release", {"page_id": "alice.looped"}, key)[:3:2] == (
        404, {"error": "page_id has no counts to release"})
