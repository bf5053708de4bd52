"""server.py and answers.py: the ASGI app production serves, called in
process over a real database file."""

from __future__ import annotations

import base64
import datetime
import hashlib
import email.utils
import html
import json
import os
import random
import signal
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import badge
import config
import flavours
import server
import storage
from stores import sqlite
from conftest import SNIPPET_CASES, hostile_text

NO_CACHE = "max-age=0, no-cache, no-store, s-maxage=0, must-revalidate, proxy-revalidate"
SVG = "{http://www.w3.org/2000/svg}"


def count(store, page_id="p"):
    return store.counts(page_id).total


def texts(body: bytes) -> list[str]:
    return [t.text for t in ET.fromstring(body).iter(SVG + "text")]


def test_badge_counts_and_shows_the_new_total(make_client):
    client, store = make_client()
    for expected in (1, 2, 3):
        response = client.get("/badge", "page_id=p")
        assert response.status == 200
        assert texts(response.body)[-1] == str(expected)
    assert count(store) == 3


def test_badge_headers_stop_every_cache(client):
    r = client.get("/badge", "page_id=p")
    assert r.headers["content-type"] == "image/svg+xml; charset=utf-8"
    assert r.headers["cache-control"] == NO_CACHE
    assert r.headers["pragma"] == "no-cache"
    expires = email.utils.parsedate_to_datetime(r.headers["expires"]).timestamp()
    assert 590 <= time.time() - expires <= 620
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "etag" not in r.headers and "last-modified" not in r.headers


def test_svg_csp_lets_nothing_run_or_load(client):
    csp = client.get("/badge", "page_id=p").headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) if " " in d.strip() else (d.strip(), "")
                      for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert set(directives) == {"default-src", "img-src", "style-src", "sandbox"}
    assert directives["img-src"] == "data:" and directives["sandbox"] == ""
    # The one style allowed is an auto SVG's theme rule, by its hash.
    digest = base64.b64encode(hashlib.sha256(badge.THEME_STYLE.encode()).digest()).decode()
    assert directives["style-src"] == f"'sha256-{digest}'"


def test_head_answers_the_same_headers_and_does_not_count(make_client):
    client, store = make_client()
    client.get("/badge", "page_id=p")
    head = client.request("HEAD", "/badge", "page_id=p")
    assert head.status == 200 and head.body == b""
    assert head.headers["cache-control"] == NO_CACHE
    assert head.headers["content-type"] == "image/svg+xml; charset=utf-8"
    assert count(store) == 1


@pytest.mark.parametrize("query", ["page_id=p&query_only=true", "page_id=p&increment=false"])
def test_query_only_shows_without_counting(make_client, query):
    client, store = make_client()
    client.get("/badge", "page_id=p")
    assert texts(client.get("/badge", query).body)[-1] == "1"
    assert count(store) == 1


@pytest.mark.parametrize("query, problem", [
    ("", "missing page_id"), ("page_id=", "empty page_id"), ("page_id=" + "a" * 257, "page_id too long"),
    ("page_id=p%01", "invalid page_id"), ("page_id=p&left_color=nope", "invalid left_color"),
    ("page_id=p&left_text=" + "x" * 65, "left_text too long"), ("page_id=p&style=fancy", "invalid style"),
    ("page_id=p&query_only=perhaps", "invalid query_only"), ("page_id=p&page_id=p", "duplicate page_id"),
    ("page_id=p" + "&t=1" * 200, "too many parameters"),
    ("page_id=p&theme=purple", "invalid theme"), ("page_id=p&theme=AUTO", "invalid theme"),
    ("page_id=p&left_color_dark=url(%23x)", "invalid left_color_dark"),
    ("page_id=p&right_color_dark=nope", "invalid right_color_dark"),
])
def test_bad_badge_request_answers_an_error_badge_and_counts_nothing(make_client, query, problem):
    client, store = make_client()
    client.get("/badge", "page_id=p")
    r = client.get("/badge", query)
    assert r.status == 200                   # GitHub's proxy shows only 200 images
    assert r.headers["x-tally-error"] == problem
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"] == "image/svg+xml; charset=utf-8"
    assert texts(r.body)[-1] == problem
    assert store.page_count() == 1 and count(store) == 1


def test_error_badge_keeps_a_valid_custom_label(client):
    r = client.get("/badge", "page_id=&left_text=hits")
    assert texts(r.body)[0] == "hits"


def test_api_count_reads_without_counting(make_client):
    client, store = make_client()
    client.get("/badge", "page_id=p")
    r = client.get("/api/count", "page_id=p")
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert json.loads(r.body) == {"page_id": "p", "total": 1, "today": 1, "visitors": 1,
                                  "visitors_today": 1, "held": 0, "held_today": 0}
    assert json.loads(client.get("/api/count", "page_id=unknown").body)["total"] == 0
    assert count(store) == 1


@pytest.mark.parametrize("path", ["/api/count", "/api/shields", "/api/history"])
@pytest.mark.parametrize("query, error", [("", "missing page_id"), ("page_id=a%00", "invalid page_id")])
def test_json_endpoints_answer_400_with_an_error(client, path, query, error):
    r = client.get(path, query)
    assert r.status == 400 and json.loads(r.body) == {"error": error}


def test_shields_endpoint_matches_the_schema(make_client):
    client, store = make_client()
    for _ in range(3):
        client.get("/badge", "page_id=p")
    body = json.loads(client.get("/api/shields", "page_id=p&label=hits&color=green&format=comma&base=1000").body)
    assert body == {"schemaVersion": 1, "label": "hits", "message": "1,003",
                    "color": "#67ac09", "labelColor": "#595959"}
    assert all(isinstance(v, str) for k, v in body.items() if k != "schemaVersion")
    assert count(store) == 3


def test_history_endpoint_lists_days(make_client):
    client, store = make_client()
    client.get("/badge", "page_id=p")
    body = json.loads(client.get("/api/history", "page_id=p&days=7").body)
    assert len(body["days"]) == 7 and body["days"][-1]["views"] == 1 and body["total"] == 1
    assert body["kept_from"] is None  # every day is kept
    assert client.get("/api/history", "page_id=p&days=366").status == 400


def test_healthz_answers_ok_while_the_database_answers(make_client):
    client, store = make_client()
    r = client.get("/healthz")
    assert (r.status, json.loads(r.body)) == (200, {"status": "ok"})
    store.close()
    r = client.get("/healthz")
    assert (r.status, json.loads(r.body)) == (503, {"status": "unavailable"})


def test_database_failure_answers_503_error_badge_and_keeps_serving(make_client):
    client, store = make_client()
    client.get("/badge", "page_id=p")
    store.backend.conn.execute("PRAGMA query_only = ON")  # every write now fails
    r = client.get("/badge", "page_id=p")
    assert r.status == 503 and r.headers["x-tally-error"] == "database unavailable"
    assert b"Traceback" not in r.body
    assert client.get("/api/count", "page_id=p").status == 200
    store.backend.conn.execute("PRAGMA query_only = OFF")
    assert texts(client.get("/badge", "page_id=p").body)[-1] == "2"


def test_database_outage_is_logged_once_and_its_end_once(make_client, caplog):
    client, store = make_client()
    store.backend.conn.execute("PRAGMA query_only = ON")
    for _ in range(5):
        assert client.get("/badge", "page_id=p").status == 503
    store.backend.conn.execute("PRAGMA query_only = OFF")
    client.get("/badge", "page_id=p")
    client.get("/badge", "page_id=p")
    messages = [r.getMessage() for r in caplog.records if r.name == "tally"]
    assert len(messages) == 2
    assert messages[0].startswith("database unavailable: database read-only")
    assert messages[1].startswith("database recovered")


def test_unexpected_error_answers_500_without_a_traceback(make_client, monkeypatch, caplog):
    client, store = make_client()

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail")
    monkeypatch.setattr(store, "record_view_async", broken)
    r = client.get("/badge", "page_id=p")
    assert r.status == 500 and r.headers["x-tally-error"] == "internal error"
    assert b"secret detail" not in r.body
    assert "secret detail" in caplog.text and "Traceback" in caplog.text


def test_an_unexpected_error_on_an_old_badge_url_answers_a_500_badge(make_client, monkeypatch,
                                                                     caplog):
    client, _ = make_client()

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail")
    monkeypatch.setattr(flavours, "badge_query", broken)
    r = client.get("/github.com/alice/repo.svg")
    assert r.status == 500 and r.headers["x-tally-error"] == "internal error"
    assert r.body.startswith(b"<svg") and b"secret detail" not in r.body
    assert "secret detail" in caplog.text and "Traceback" in caplog.text


def test_allow_pattern_refuses_other_pages(make_client):
    client, store = make_client(allow=r"alice\..*")
    assert client.get("/badge", "page_id=alice.repo").headers.get("x-tally-error") is None
    r = client.get("/badge", "page_id=mallory.junk")
    assert r.headers["x-tally-error"] == "page_id not allowed"
    assert store.page_count() == 1


def test_page_cap_refuses_new_ids_and_keeps_counting_old_ones(make_client):
    client, store = make_client(max_pages=2)
    client.get("/badge", "page_id=a")
    client.get("/badge", "page_id=b")
    r = client.get("/badge", "page_id=c")
    assert r.status == 200 and r.headers["x-tally-error"] == "page limit reached"
    assert texts(client.get("/badge", "page_id=a").body)[-1] == "2"
    assert store.page_count() == 2


def test_camo_only_counts_only_githubs_proxy(make_client):
    client, store = make_client(camo_only=True)
    r = client.get("/badge", "page_id=p", headers={"User-Agent": "curl/8"})
    assert texts(r.body)[-1] == "0"
    client.get("/badge", "page_id=p", headers={"User-Agent": "github-camo (876de43e)"})
    assert count(store) == 1


def test_metrics_are_off_by_default(client):
    assert client.get("/metrics").status == 404


def test_metrics_count_requests_views_errors_and_pages(make_client):
    client, store = make_client(metrics=True)
    client.get("/badge", "page_id=p")
    client.get("/badge", "page_id=")
    text = client.get("/metrics").text
    assert 'tally_requests_total{route="/badge",status="200"} 2.0' in text
    assert "tally_views_recorded_total 1.0" in text
    assert 'tally_errors_total{kind="empty page_id"} 1.0' in text
    assert "tally_pages 1.0" in text
    assert 'tally_db_seconds_count{operation="record_view"} 1.0' in text


def test_index_shows_the_embed_line(client):
    r = client.get("/")
    assert r.status == 200 and "text/html" in r.headers["content-type"]
    assert "![visitors](http://127.0.0.1/badge?page_id=owner.repo)" in r.text


def test_unknown_path_is_a_json_404(client):
    r = client.get("/nothing")
    assert r.status == 404 and json.loads(r.body) == {"error": "not found"}


def test_only_get_and_head_reach_badges(make_client):
    client, store = make_client()
    assert client.request("POST", "/badge", "page_id=p").status == 405
    assert count(store) == 0


def test_bottles_routes_are_wsgi_compliant(make_client):
    # bottle's routes run as WSGI (a2wsgi) inside the ASGI app; the requests
    # every view makes never reach them (answers.py, on the event loop).
    client, _ = make_client()
    checked = validator(client.app.routes)
    for path, query in [("/healthz", ""), ("/", ""), ("/stats", "page_id=p"),
                        ("/api/history", "page_id=p")]:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
                   "SCRIPT_NAME": ""}
        setup_testing_defaults(environ)
        seen = {}
        result = checked(environ, lambda status, headers, exc_info=None: seen.update(status=status))
        b"".join(result)
        result.close()
        assert int(seen["status"].split()[0]) in (200, 400)
    for path, query in [("/badge", "page_id=p"), ("/badge", ""), ("/api/count", "page_id=p")]:
        assert client.get(path, query).status in (200, 400)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile_text(st, 30), st.sampled_from(["page_id", "left_text", "left_color", "label", "style"]),
       st.sampled_from(["flat", "plastic", "for-the-badge", "social"]))
def test_any_query_gives_no_5xx_and_echoes_nothing_unescaped(client, fuzz, name, style):
    # Markers around the input: if it comes back raw, "Q<input>Z" is in the body.
    text = "Q" + fuzz + "Z"
    query = urllib.parse.urlencode({"page_id": "fuzz", "style": style, name: text})
    for path in ("/badge", "/api/count", "/api/shields", "/api/history", "/", "/stats"):
        r = client.get(path, query)
        assert r.status < 500
        # A quote in SVG text content is plain XML (badge() writes it so and
        # flat must stay byte-identical to it); parsing proves nothing broke
        # out. Everywhere else quotes are escaped too.
        dangerous = "<&" if path == "/badge" else "<&\"'"
        if any(c in fuzz for c in dangerous):
            assert text not in r.text
        if path == "/badge":
            ET.fromstring(r.body)
        elif path.startswith("/api"):
            json.loads(r.body)


# Hardening ##################################################################


@pytest.mark.parametrize("style", ["flat", "flat-square", "plastic", "for-the-badge", "social"])
@pytest.mark.parametrize("query", ["page_id=p&left_text=a%EF%BF%BEb", "page_id=p%EF%BF%BF",
                                   "page_id=p&label=%E2%80%AE", "page_id=%20%20"])
def test_forbidden_characters_get_an_error_badge_in_xml_and_count_nothing(make_client, caplog,
                                                                          query, style):
    client, store = make_client()
    for extra in ("", "&query_only=true"):
        r = client.get("/badge", f"{query}&style={style}{extra}")
        assert r.status == 200 and r.headers["x-tally-error"].startswith(("invalid", "empty"))
        ET.fromstring(r.body)
    assert store.page_count() == 0
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("path", ["/", "/stats"])
def test_a_bad_query_on_a_page_answers_html(client, path):
    r = client.get(path, "page_id=a&page_id=b")
    assert r.status == 400 and r.headers["content-type"].startswith("text/html")
    assert "duplicate page_id" in r.text


@pytest.mark.parametrize("page_id", ["c++", "a&b", "a#b", "x%41", "a b/c?d"])
def test_page_ids_are_url_encoded_in_every_link(client, page_id):
    encoded = urllib.parse.quote(page_id, safe="")
    stats = client.get("/stats", urllib.parse.urlencode({"page_id": page_id})).text
    assert f'href="/api/history?page_id={encoded}&amp;days=30"' in stats
    index = client.get("/", urllib.parse.urlencode({"page_id": page_id})).text
    assert f'href="/stats?page_id={encoded}"' in index


def textarea(page: str, key: str) -> str:
    start = page.index(f'id="snippet-{key}"')
    body = page[page.index(">", start) + 1:page.index("</textarea>", start)]
    return html.unescape(body)


@pytest.mark.parametrize("label, markdown_alt, html_alt", SNIPPET_CASES)
def test_snippets_without_javascript_escape_the_label(client, label, markdown_alt, html_alt):
    page = client.get("/", urllib.parse.urlencode({"page_id": "p", "left_text": label})).text
    url = "http://127.0.0.1/badge?" + urllib.parse.urlencode({"page_id": "p", "left_text": label})
    assert textarea(page, "markdown") == f"![{markdown_alt}]({url})"
    assert textarea(page, "html") == f'<img src="{url}" alt="{html_alt}">'


def test_an_undecodable_path_reaches_no_route(make_client):
    client, store = make_client()
    r = client.get("/b%FFadge", "page_id=x")  # the byte 0xFF: not UTF-8
    assert r.status == 400 and json.loads(r.body) == {"error": "path is not UTF-8"}
    assert store.page_count() == 0
    assert client.get("/badge", "page_id=x").status == 200  # a good path still counts


@pytest.mark.parametrize("change", ["removed", "replaced", "folder moved"])
def test_a_database_file_gone_under_the_server_answers_503_and_logs_once(
        make_client, db_path, caplog, change):
    client, store = make_client()
    assert client.get("/badge", "page_id=p").status == 200
    folder = os.path.dirname(db_path)
    if change == "removed":
        os.remove(db_path)
    elif change == "replaced":
        os.replace(db_path, db_path + ".old")
        with sqlite.Store(db_path + ".new") as other:
            other.record_view("p")
        os.replace(db_path + ".new", db_path)
    else:
        os.rename(folder, folder + "-moved")
    for _ in range(3):
        r = client.get("/badge", "page_id=p")
        assert r.status == 503 and r.headers["x-tally-error"] == "database unavailable"
    assert client.get("/healthz").status == 503
    assert caplog.text.count("database file removed or replaced") == 1


@pytest.mark.parametrize("style", ["plastic", "for-the-badge", "social"])
def test_an_error_badge_keeps_the_requested_style(client, style):
    r = client.get("/badge", f"page_id=p&style={style}&left_color=nope")
    assert r.headers["x-tally-error"] == "invalid left_color"
    assert r.body.decode() == badge.render_error("visitors", "invalid left_color", style)


def test_an_error_badge_of_an_invalid_style_is_flat(client):
    r = client.get("/badge", "page_id=p&style=round")
    assert r.body.decode() == badge.render_error("visitors", "invalid style")


# github: pages (GitHub's numbers, kept by github.py) ##########################

def keep_traffic(store, repo="alice/repo", linked=None):
    """A kept repository with three days seen, a lost day between, and today."""
    import datetime as dt
    import storage as storage_module
    now = storage_module.utc_now()
    today = now.date()
    store.github.add(repo, linked, now)
    days = {(today - dt.timedelta(days=4)).isoformat(): storage_module.TrafficDay(10, 4, 2, 1),
            (today - dt.timedelta(days=3)).isoformat(): storage_module.TrafficDay(20, 6, 0, 0),
            today.isoformat(): storage_module.TrafficDay(5, 3, 1, 1)}
    popular = [storage_module.Popular("referrer", "news.ycombinator.com", "news.ycombinator.com",
                                      7, 5),
               storage_module.Popular("path", "/alice/repo", "alice/repo: <b>x</b>", 9, 4)]
    store.github.save(repo, days, [], popular, today.isoformat(), now,
                      now + dt.timedelta(hours=6))
    return days  # days -2 and -1: GitHub's window moved past them unseen


@pytest.mark.parametrize("show, shown", [("total", "35"), ("visitors", "13"), ("clones", "3"),
                                         ("today", "5"), ("both", "5 / 35")])
def test_a_github_page_shows_githubs_numbers_without_counting(make_client, show, shown):
    client, store = make_client()
    keep_traffic(store)
    r = client.get("/badge", f"page_id=github:Alice/Repo&show={show}")
    assert r.status == 200 and f">{shown}</text>" in r.text
    assert "x-tally-error" not in r.headers
    assert store.page_count() == 0 and store.github.traffic("alice/repo").views == 35


def test_a_github_page_not_kept_answers_an_error_badge(client):
    r = client.get("/badge", "page_id=github:alice/unknown")
    assert r.status == 200 and r.headers["x-tally-error"] == "repository not kept"


@pytest.mark.parametrize("page_id", ["github:", "github:alice", "github:a/b/c", "github:-a/b",
                                     "github:alice/.."])
def test_an_invalid_github_page_id_is_refused(client, page_id):
    r = client.get("/badge", "page_id=" + urllib.parse.quote(page_id))
    assert r.headers["x-tally-error"] == "invalid github: page_id"


@pytest.mark.parametrize("show", ["clones"])
def test_githubs_numbers_asked_of_another_page_are_refused_and_nothing_counts(make_client, show):
    client, store = make_client()
    r = client.get("/badge", f"page_id=alice.repo&show={show}")
    assert r.headers["x-tally-error"] == f"show={show} needs a github: page"
    assert store.page_count() == 0
    assert client.get("/api/shields", f"page_id=alice.repo&show={show}").status == 400


def test_tally_allow_does_not_hide_a_kept_repository(make_client):
    client, store = make_client(allow=r"alice\..*")
    keep_traffic(store)
    assert "x-tally-error" not in client.get("/badge", "page_id=github:alice/repo").headers


def test_api_count_of_a_github_page_has_its_numbers(make_client):
    client, store = make_client()
    keep_traffic(store)
    answer = json.loads(client.get("/api/count", "page_id=github:alice/repo").body)
    assert {k: answer[k] for k in ("page_id", "total", "today", "visitors", "visitors_today",
                                   "clones")} == {
        "page_id": "github:alice/repo", "total": 35, "today": 5, "visitors": 13,
        "visitors_today": 3, "clones": 3}
    assert answer["synced_at"] and answer["first_day"]


def test_api_history_of_a_github_page_marks_lost_days_without_numbers(make_client):
    client, store = make_client()
    keep_traffic(store)
    answer = json.loads(client.get("/api/history", "page_id=github:alice/repo&days=7").body)
    states = [d["state"] for d in answer["days"]]
    assert states == ["not kept", "not kept", "kept", "kept", "lost", "lost", "kept"]
    assert answer["lost_days"] == 2
    lost = answer["days"][4]
    assert lost["views"] is None and lost["visitors"] is None
    assert answer["days"][2]["views"] == 10 and answer["days"][2]["visitors"] == 4


def test_stats_of_a_github_page_show_lost_days_referrers_and_the_linked_page(make_client):
    client, store = make_client()
    store.record_view("alice.repo")
    store.record_view("alice.repo")
    keep_traffic(store, linked="alice.repo")
    r = client.get("/stats", "page_id=github:alice/repo&days=7")
    assert r.status == 200
    assert 'id="lost">2 days lost' in r.text
    assert "news.ycombinator.com" in r.text
    assert "alice/repo: &lt;b&gt;x&lt;/b&gt;" in r.text  # GitHub's titles are escaped
    assert "Tally's views of alice.repo" in r.text
    assert "<td>2</td>\n</tr>" in r.text  # today's Camo-counted views, beside GitHub's
    assert r.text.count('<tr class="lost">') == 2
    # No bar of zero: two lost days marked as lost, two before keeping began as not kept.
    assert r.text.count('data-views="none"') == 2
    assert r.text.count('data-views="not kept"') == 2


def test_stats_of_a_repository_not_kept_says_so(client):
    r = client.get("/stats", "page_id=github:alice/unknown")
    assert r.status == 404 and "repository not kept" in r.text


def test_api_shields_of_a_github_page_shows_visitors(make_client):
    client, store = make_client()
    keep_traffic(store)
    answer = json.loads(client.get("/api/shields", "page_id=github:alice/repo&show=visitors").body)
    assert answer["message"] == "13"


# Visitors and bots (visitors.py, docs/privacy.md) #############################

CAMO = "github-camo (c006e452)"
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
CRAWLER = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def from_client(n: int, agent: str | None = None) -> dict:
    # The trusted proxy (127.0.0.1, the in-process client's address) names
    # the visitor's address.
    headers = {"X-Forwarded-For": f"198.51.100.{n}"}
    if agent is not None:
        headers["User-Agent"] = agent
    return headers


def api_count(client, page_id: str) -> dict:
    return json.loads(client.get("/api/count", "page_id=" + page_id).body)


def test_five_clients_four_views_each_are_twenty_views_and_five_visitors(client):
    for n in range(5):
        for _ in range(4):
            assert client.get("/badge", "page_id=blog", headers=from_client(n)).status == 200
    answer = api_count(client, "blog")
    assert (answer["total"], answer["visitors"], answer["visitors_today"]) == (20, 5, 5)
    r = client.get("/badge", "page_id=blog&show=visitors&query_only=true")
    assert ">5</text>" in r.text
    both = client.get("/badge", "page_id=blog&show=visitors_today&query_only=true&format=comma")
    assert ">5</text>" in both.text


@pytest.mark.parametrize("agent", [CAMO, GMAIL])
def test_image_proxies_add_views_but_no_visitors(client, agent):
    for n in range(3):
        client.get("/badge", "page_id=readme", headers=from_client(n, agent))
    answer = api_count(client, "readme")
    assert (answer["total"], answer["visitors"]) == (3, 0)


def test_a_crawler_gets_the_badge_but_adds_neither_views_nor_visitors(make_client):
    client, store = make_client(metrics=True)
    client.get("/badge", "page_id=blog", headers=from_client(1))
    r = client.get("/badge", "page_id=blog", headers=from_client(2, CRAWLER))
    assert r.status == 200 and ">1</text>" in r.text
    assert (api_count(client, "blog")["total"], api_count(client, "blog")["visitors"]) == (1, 1)
    history = json.loads(client.get("/api/history", "page_id=blog&days=1").body)
    assert history["days"][0]["bots"] == 1
    assert "tally_bot_views_total 1.0" in client.get("/metrics").text
    assert client.get("/badge", "page_id=new-page", headers=from_client(3, CRAWLER)).status == 200
    assert store.page("new-page") is None


def test_count_bots_counts_a_crawler_as_a_view_never_as_a_visitor(make_client):
    client, _ = make_client(count_bots=True)
    client.get("/badge", "page_id=blog", headers=from_client(1, CRAWLER))
    answer = api_count(client, "blog")
    assert (answer["total"], answer["visitors"]) == (1, 0)


def test_visitors_off_writes_no_hash(make_client, db_path):
    client, _ = make_client(visitors=False)
    client.get("/badge", "page_id=blog", headers=from_client(1))
    assert (api_count(client, "blog")["total"], api_count(client, "blog")["visitors"]) == (1, 0)
    import sqlite3
    conn = sqlite3.connect(db_path + "-visitors")
    assert conn.execute("SELECT count(*) FROM visitor_salts").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM visitor_hashes").fetchone()[0] == 0
    conn.close()


def test_a_forwarded_address_from_anyone_but_the_trusted_proxy_is_not_believed(make_client):
    client, _ = make_client(trusted_proxy="192.0.2.1")
    for n in range(3):  # three claimed addresses, one real client: one visitor
        client.get("/badge", "page_id=blog", headers=from_client(n))
    assert api_count(client, "blog")["visitors"] == 1


def test_stats_show_visitors_and_bot_views(client):
    client.get("/badge", "page_id=blog", headers=from_client(1))
    client.get("/badge", "page_id=blog", headers=from_client(2, CRAWLER))
    r = client.get("/stats", "page_id=blog")
    assert 'id="visitors">1<' in r.text and 'id="bots">1<' in r.text


def test_no_answer_sets_a_cookie(client):
    for path, query in [("/badge", "page_id=blog"), ("/api/count", "page_id=blog"),
                        ("/stats", "page_id=blog"), ("/", "")]:
        assert "set-cookie" not in client.get(path, query, headers=from_client(1)).headers


def test_dwyls_show_unique_shows_visitors(client):
    for n in range(3):
        client.get("/alice/repo.svg", headers=from_client(n))
        client.get("/alice/repo.svg", headers=from_client(n))
    assert ">7</text>" in client.get("/alice/repo.svg", headers=from_client(9)).text
    assert ">4</text>" in client.get("/alice/repo.svg", "show=unique", headers=from_client(1)).text
    answer = json.loads(client.get("/alice/repo.json", "show=unique", headers=from_client(1)).body)
    assert answer["message"] == "4"


def test_stats_and_history_say_where_history_begins_with_keep_days(make_client):
    client, store = make_client(keep_days=3)
    today = datetime.datetime.now(datetime.timezone.utc).date()
    days = {(today - datetime.timedelta(days=back)).isoformat(): 1 for back in range(6)}
    store.import_pages([storage.Page("blog", 7, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
                                     days)], "set")
    client.get("/badge", "page_id=blog")
    assert store.trim_history() == 3
    kept_from = (today - datetime.timedelta(days=2)).isoformat()
    body = json.loads(client.get("/api/history", "page_id=blog&days=7").body)
    assert body["kept_from"] == kept_from and body["total"] == 8
    assert [d["views"] for d in body["days"]] == [None] * 4 + [1, 1, 2]
    page = client.get("/stats", "page_id=blog&days=7").text
    assert f"History begins on {kept_from}" in page
    # The chart's marks without numbers say "not kept", not the lost days' "no data".
    assert page.count('<rect class="not-kept"') == 4 and 'class="lost"' not in page
    assert page.count('<rect class="bar"') == 3


# Why a view did not count (issue 28) #######################################

def counted(response) -> str | None:
    return response.headers.get("x-tally-counted")


@pytest.mark.parametrize("settings, method, path, query, agent, expected", [
    ({}, "GET", "/badge", "page_id=p", None, "yes"),  # as a person's browser speaks
    ({}, "GET", "/badge", "page_id=p", "curl/8.5.0", "no; bot"),
    ({"count_bots": True}, "GET", "/badge", "page_id=p", "curl/8.5.0", "yes; bot"),
    ({}, "HEAD", "/badge", "page_id=p", None, "no; HEAD"),
    ({}, "GET", "/badge", "page_id=p&query_only=true", None, "no; query_only"),
    ({"camo_only": True}, "GET", "/badge", "page_id=p", None, "no; camo-only"),
    ({"camo_only": True}, "GET", "/badge", "page_id=p", "github-camo (c006e452)", "yes"),
    ({}, "GET", "/badge", "page_id=ghpvc:alice", None, "no; reserved page_id"),
    ({}, "GET", "/badge", "page_id=p&style=nope", None, "no; invalid style"),
    ({}, "GET", "/api/count", "page_id=p", None, "no; read only"),
    ({}, "GET", "/api/count/keep/badge.svg", "url=https://example.com/x", None, "no; read only"),
    ({}, "GET", "/api/count/incr/badge.svg", "url=https://example.com/x", None, "yes"),
])
def test_every_view_answer_says_whether_it_counted_and_why_not(make_client, settings, method,
                                                               path, query, agent, expected):
    client, store = make_client(**settings)
    headers = {"User-Agent": agent} if agent else None
    answer = client.request(method, path, query, headers=headers)
    assert counted(answer).startswith(expected)
    total = store.counts("p").total + store.counts("hits:example.com/x").total
    assert total == (1 if expected.startswith("yes") else 0)


# serve's main loop (issue 28: 9) ############################################

def test_granians_main_loop_waits_on_an_event_a_signal_handler_can_set():
    # granian's threading.Event deadlocked when SIGTERM's handler set it in
    # the moment its wait() held the event's lock (serve never ended).
    event = server.http_server(config.Config(), server.free_port()).main_loop_interrupt
    assert isinstance(event, server.SignalSafeEvent)
    previous = signal.signal(signal.SIGALRM, lambda *_: event.set())
    try:
        for _ in range(20):  # the signal lands at another moment of wait() each time
            event.clear()
            signal.setitimer(signal.ITIMER_REAL, 0.001 + random.random() * 0.05)
            assert event.wait(timeout=10) and event.is_set()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    event.clear()
    assert event.wait(timeout=0.2) is False
    threading.Timer(0.05, event.set).start()  # granian's worker watcher sets it from a thread
    assert event.wait(timeout=10)


# A failure answers in its route's kind (issue 29: 3) #########################

@pytest.mark.parametrize("path, kind", [("/stats", "text/html"), ("/api/history", "application/json"),
                                        ("/api/shields", "application/json")])
def test_with_the_database_down_each_route_answers_503_in_its_own_kind(make_client, monkeypatch,
                                                                        path, kind):
    client, store = make_client()

    def down(*args, **kwargs):
        raise storage.StorageUnreachable("connection refused")
    monkeypatch.setattr(store, "counts", down)
    monkeypatch.setattr(store, "days", down)
    r = client.get(path, "page_id=p")
    assert r.status == 503 and r.headers["content-type"].startswith(kind)
    assert b"database unavailable" in r.body and b"connection refused" not in r.body
    if kind == "text/html":
        assert r.headers["content-security-policy"] == server.PAGE_CSP
        assert b"<h1>503: database unavailable</h1>" in r.body


def test_every_route_of_the_table_is_answered(make_client):
    import routes
    client, _ = make_client(metrics=True, self_service=True)
    for route in routes.TABLE:
        path = route.path.replace("<name>", "tally.css")
        r = client.request(route.methods[0], path, "page_id=p")
        if route.handler == "owners":  # without a key or a body: refused, in JSON
            assert r.status in (401, 415), (path, r.status)
        else:
            assert r.status == 200, (path, r.status)
        assert r.headers["content-type"].split(";")[0] == {
            "svg": "image/svg+xml", "json": "application/json", "html": "text/html",
            "text": "text/plain", "file": "text/css"}[route.kind], path


# /chart (issue 31) ###########################################################

def chart_bars(body: bytes) -> list[ET.Element]:
    return [r for r in ET.fromstring(body).iter(SVG + "rect") if r.get("class") == "bar"]


@pytest.fixture
def charted(make_client):
    """A page with views and visitors on three of its last seven days."""
    client, store = make_client()
    today = datetime.datetime.now(datetime.timezone.utc).date()
    days = {(today - datetime.timedelta(days=back)).isoformat(): views
            for back, views in ((0, 4), (1, 10), (3, 5))}
    visitors = {day: views // 2 for day, views in days.items()}
    store.import_pages([storage.Page("blog", 19, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z",
                                     days, visitors=9, visitor_days=visitors)], "set")
    return client, store


def test_chart_draws_a_bar_per_day_by_its_views_and_counts_nothing(charted):
    client, store = charted
    r = client.get("/chart", "page_id=blog&days=7")
    assert r.status == 200 and r.headers["content-type"] == "image/svg+xml; charset=utf-8"
    assert r.headers["cache-control"] == NO_CACHE and r.headers["x-tally-counted"] == "no; read only"
    drawn = chart_bars(r.body)
    assert [int(b.get("data-views")) for b in drawn] == [0, 0, 0, 5, 0, 10, 4]
    heights = [float(b.get("height")) for b in drawn]
    assert heights[3] == pytest.approx(heights[5] / 2) and heights[0] == 0
    assert drawn[5].find(SVG + "title").text.endswith(": 10 views")
    assert "19 views in 7 days" in texts(r.body)
    visitors = chart_bars(client.get("/chart", "page_id=blog&days=7&show=visitors").body)
    assert [int(b.get("data-views")) for b in visitors] == [0, 0, 0, 2, 0, 5, 2]
    assert len(chart_bars(client.get("/chart", "page_id=blog").body)) == 30
    assert count(store, "blog") == 19 and store.counts("blog").today == 4


def test_chart_of_an_unknown_page_is_empty_saying_so_and_creates_nothing(client):
    r = client.get("/chart", "page_id=nobody.here&days=14")
    assert r.status == 200 and r.headers.get("x-tally-error") is None
    assert "no views of this page yet" in texts(r.body)
    assert [float(b.get("height")) for b in chart_bars(r.body)] == [0.0] * 14
    assert json.loads(client.get("/api/count", "page_id=nobody.here").body)["total"] == 0


@pytest.mark.parametrize("query, problem", [
    ("page_id=blog&days=6", "invalid days"), ("page_id=blog&days=366", "invalid days"),
    ("page_id=blog&days=x", "invalid days"), ("page_id=blog&show=both", "invalid show"),
    ("page_id=blog&theme=dim", "invalid theme"), ("page_id=blog&right_color=nope", "invalid right_color"),
    ("days=7", "missing page_id"),
])
def test_a_bad_chart_request_is_an_error_image(charted, query, problem):
    client, store = charted
    r = client.get("/chart", query)
    assert r.status == 200 and r.headers["x-tally-error"] == problem
    assert count(store, "blog") == 19


def test_chart_takes_the_badges_colours_and_theme(charted):
    client, _ = charted
    r = client.get("/chart", "page_id=blog&days=7&right_color=orange&left_text=readers")
    assert {b.get("fill") for b in chart_bars(r.body)} == {"#ea7233"}
    assert ET.fromstring(r.body).find(SVG + "title").text == "readers: 19 views in 7 days"
    auto = client.get("/chart", "page_id=blog&days=7&theme=auto&right_color_dark=%23fff").body
    assert badge.THEME_STYLE.encode() in auto and len(chart_bars(auto)) == 14
    assert len(chart_bars(client.get("/chart", "page_id=blog&days=365").body)) == 365


def test_hits_daily_chart_is_drawn_by_the_same_code(make_client):
    client, _ = make_client()
    client.get("/api/count/incr/badge.svg", "url=github.com/alice/repo")
    r = client.get("/api/count/graph/dailyhits.svg", "url=github.com/alice/repo&count_bg=%23123456")
    drawn = chart_bars(r.body)
    assert len(drawn) == 60 and drawn[-1].get("data-views") == "1"
    assert {b.get("fill") for b in drawn} == {"#123456"}
    assert "1 view in 60 days" in texts(r.body)
