"""flavours.py: other counters' badge URLs, served through the app as plain WSGI
over a real database file, as people wrote them in their READMEs."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flavours
import routes
from params import ParamError

SVG = "{http://www.w3.org/2000/svg}"
CAMO = {"User-Agent": "github-camo (8f3e0b6c)"}


def drawn(body: bytes) -> dict:
    """What a person sees: label, message, the two fills, round corners."""
    root = ET.fromstring(body)
    texts = [t.text for t in root.iter(SVG + "text")]
    fills = [r.get("fill") for r in root.iter(SVG + "rect") if r.get("fill", "").startswith("#")
             and r.get("fill") != "#fff"]
    return {"label": texts[0], "message": texts[-1], "fills": fills[:2],
            "rounded": any(r.get("rx") for r in root.iter(SVG + "rect"))}


def total(client, page_id: str) -> int:
    return json.loads(client.get("/api/count", f"page_id={page_id}").body)["total"]


# Hits (hits.seeyoufarm.com) ###################################################

HITS_GENERATOR_URL = ("url=https%3A%2F%2Fgithub.com%2Falice%2Frepo&count_bg=%2379C83D&title_bg=%23555555"
                      "&icon=github.svg&icon_color=%23E7E7E7&title=hits&edge_flat=false")


def test_hits_url_from_its_generator_draws_as_hits_did(make_client):
    client, _ = make_client()
    r = client.get("/api/count/incr/badge.svg", HITS_GENERATOR_URL)
    assert r.status == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert drawn(r.body) == {"label": "hits", "message": "1 / 1", "fills": ["#555555", "#79c83d"],
                             "rounded": True}


@pytest.mark.parametrize("query, label, fills, rounded", [
    ("url=github.com/alice/repo", "hits", ["#555", "#79c83d"], True),
    ("url=github.com/alice/repo&title=views+today&title_bg=000&count_bg=%23ff0000", "views today",
     ["#000", "#ff0000"], True),
    ("url=github.com/alice/repo&edge_flat=true", "hits", ["#555", "#79c83d"], False),
])
def test_hits_options_and_defaults(make_client, query, label, fills, rounded):
    client, _ = make_client()
    seen = drawn(client.get("/api/count/incr/badge.svg", query).body)
    assert (seen["label"], seen["fills"], seen["rounded"]) == (label, fills, rounded)


def test_hits_spellings_of_one_url_share_a_counter(make_client):
    client, _ = make_client()
    for url in ("https://github.com/alice/repo", "http://GitHub.com/alice/repo",
                "github.com:443/alice/repo", "https://github.com/alice/repo?tab=readme#top"):
        client.get("/api/count/incr/badge.svg", f"url={url}")
    assert total(client, "hits:github.com/alice/repo") == 4
    client.get("/api/count/incr/badge.svg", "url=https://github.com/alice/repo/")
    assert total(client, "hits:github.com/alice/repo/") == 1  # a trailing / is another page


def test_hits_keep_and_chart_never_count(make_client):
    client, _ = make_client()
    client.get("/api/count/incr/badge.svg", "url=github.com/alice/repo")
    kept = client.get("/api/count/keep/badge.svg", "url=github.com/alice/repo")
    assert drawn(kept.body)["message"] == "1 / 1"
    chart = client.get("/api/count/graph/dailyhits.svg", "url=github.com/alice/repo")
    assert chart.status == 200 and len(ET.fromstring(chart.body).findall(f".//{SVG}rect")) == 60
    assert total(client, "hits:github.com/alice/repo") == 1


@pytest.mark.parametrize("query, problem", [
    ("", "missing url"), ("url=javascript:alert(1)", "invalid url"),
    ("url=ftp://example.org/x", "invalid url"), ("url=https://", "invalid url"),
    ("url=github.com/x&count_bg=url(x)", "invalid count_bg"),
])
def test_hits_bad_input_is_an_error_badge_and_counts_nothing(make_client, query, problem):
    client, store = make_client()
    r = client.get("/api/count/incr/badge.svg", query)
    assert r.status == 200 and r.headers["x-tally-error"] == problem
    assert store.page_count() == 0


# komarev's GitHub profile views counter ######################################


def test_komarev_counts_only_githubs_image_proxy(make_client):
    client, _ = make_client()
    r = client.get("/ghpvc/", "username=alice", headers=CAMO)
    assert drawn(r.body) == {"label": "Profile views", "message": "1", "fills": ["#555", "#007ec6"],
                             "rounded": True}
    seen = client.get("/ghpvc/", "username=alice", headers={"User-Agent": "Mozilla/5.0"})
    assert drawn(seen.body)["message"] == "1"
    client.get("/ghpvc", "username=ALICE", headers=CAMO)  # no slash, other case: same counter
    assert total(client, "ghpvc:alice") == 2


@pytest.mark.parametrize("query, message, fills", [
    ("username=alice&base=1233", "1,234", ["#555", "#007ec6"]),
    ("username=alice&base=12344&abbreviated=true", "12.3K", ["#555", "#007ec6"]),
    ("username=alice&base=12344&abbreviated=0", "12,345", ["#555", "#007ec6"]),
    ("username=alice&color=ff69b4&label=Visitors", "1", ["#555", "#ff69b4"]),
    ("username=alice&color=%23dfb317", "1", ["#555", "#dfb317"]),
])
def test_komarev_number_format_and_colours(make_client, query, message, fills):
    client, _ = make_client()
    seen = drawn(client.get("/ghpvc/", query, headers=CAMO).body)
    assert (seen["message"], seen["fills"]) == (message, fills)


@pytest.mark.parametrize("style, expected", [("flat-square", False), ("plastic", True),
                                             ("something-else", True)])
def test_komarev_styles_with_unknown_ones_drawn_flat(make_client, style, expected):
    client, _ = make_client()
    r = client.get("/ghpvc/", f"username=alice&style={style}")
    assert r.status == 200 and "x-tally-error" not in r.headers
    assert drawn(r.body)["rounded"] is expected


def test_komarev_pixel_is_a_transparent_pixel(make_client):
    client, _ = make_client()
    r = client.get("/ghpvc/", "username=alice&style=pixel", headers=CAMO)
    assert r.body == b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'


@pytest.mark.parametrize("username", ["", "-alice", "alice-", "al--ice", "a" * 40, "al_ice",
                                      "al%C3%AFce"])
def test_komarev_refuses_names_github_would_refuse(make_client, username):
    client, store = make_client()
    r = client.get("/ghpvc/", f"username={username}", headers=CAMO)
    assert r.headers["x-tally-error"] in ("missing username", "invalid username")
    assert store.page_count() == 0


# hits.sh ######################################################################


@pytest.mark.parametrize("path, query, label, message, fills", [
    ("/github.com/alice/repo.svg", "", "hits", "1", ["#555", "#4c1"]),
    ("/github.com/alice/repo.svg", "view=today-total&label=views&color=%23ff0000", "views",
     "1 / 1", ["#555", "#ff0000"]),
    ("/github.com/alice/repo.svg", "extraCount=1233&labelColor=000", "hits", "1,234",
     ["#000", "#4c1"]),
    ("/github.com/alice/repo.svg", "logo=github&style=flat-square", "hits", "1", ["#555", "#4c1"]),
])
def test_hitssh_urls_as_written(make_client, path, query, label, message, fills):
    client, _ = make_client()
    seen = drawn(client.get(path, query).body)
    assert (seen["label"], seen["message"], seen["fills"]) == (label, message, fills)


def test_hitssh_key_keeps_case_and_preview_does_not_count(make_client):
    client, _ = make_client()
    client.get("/github.com/Alice/Repo.svg")
    assert drawn(client.get("/github.com/Alice/Repo.preview").body)["message"] == "1"
    assert total(client, "hitssh:github.com/Alice/Repo") == 1
    assert total(client, "hitssh:github.com/alice/repo") == 0
    urn = json.loads(client.get("/api/urns/github.com/Alice/Repo").body)
    assert urn["total"] == 1 and urn["items"][0]["data"][0]["value"] == 1
    assert client.get("/api/urns/github.com/nobody/here").status == 404


def test_hitssh_path_without_a_dot_is_refused(make_client):
    client, store = make_client()
    r = client.get("/nodot.svg")
    assert r.status == 200 and r.headers["x-tally-error"] == "invalid urn"
    assert store.page_count() == 0


# dwyl's hits ##################################################################


@pytest.mark.parametrize("query, rounded", [("", True), ("style=flat", True),
                                            ("style=flat-square", False), ("style=plastic", False)])
def test_dwyl_draws_flat_or_flat_square(make_client, query, rounded):
    client, _ = make_client()
    seen = drawn(client.get("/alice/my-repo.svg", query).body)
    assert seen == {"label": "hits", "message": "1", "fills": ["#555", "#4c1"], "rounded": rounded}


def test_dwyl_json_is_shields_endpoint_and_counts(make_client):
    client, _ = make_client()
    client.get("/Alice/Repo.svg")
    answer = json.loads(client.get("/Alice/Repo.json", "color=orange").body)
    assert answer["schemaVersion"] == 1 and answer["label"] == "hits" and answer["message"] == "2"
    assert total(client, "dwyl:Alice/Repo") == 2


def test_dwyl_refuses_a_bad_user(make_client):
    client, store = make_client()
    r = client.get("/-bad-/repo.svg")
    assert r.headers["x-tally-error"] == "invalid user or repository"
    assert store.page_count() == 0


# visitorbadge.io ##############################################################


def test_visitorbadge_paths_show_total_today_and_both(make_client):
    client, _ = make_client()
    query = "path=https%3A%2F%2Fgithub.com%2Falice%2Frepo"
    assert drawn(client.get("/api/visitors", query).body) == {
        "label": "visitors", "message": "1", "fills": ["#555555", "#263759"], "rounded": True}
    assert drawn(client.get("/api/daily", query).body)["message"] == "2"
    assert drawn(client.get("/api/combined", query).body)["message"] == "3 / 3"
    assert drawn(client.get("/api/visitors", query + "&readonly=true").body)["message"] == "3"
    status = json.loads(client.get("/api/status", query).body)
    assert status == {"path": "https://github.com/alice/repo", "total": 3, "today": 3}


def test_visitorbadge_user_and_repo_name_the_github_path(make_client):
    client, _ = make_client()
    client.get("/api/visitors", "user=alice&repo=repo")
    client.get("/api/visitors", "path=https://github.com/alice/repo")
    assert total(client, "visitorbadge:https://github.com/alice/repo") == 2


@pytest.mark.parametrize("query, label", [("label=Views&labelStyle=upper", "VIEWS"),
                                          ("label=Views&labelStyle=lower", "views"),
                                          ("label=Views&labelStyle=none", "Views")])
def test_visitorbadge_label_style(make_client, query, label):
    client, _ = make_client()
    assert drawn(client.get("/api/visitors", "path=x&" + query).body)["label"] == label


# Shared rules #################################################################


def test_tallys_own_routes_win(make_client):
    client, store = make_client()
    assert client.get("/static/tally.css").status == 200
    assert client.get("/api/count", "page_id=p").status == 200
    assert client.get("/stats", "page_id=p").status == 200
    assert store.page_count() == 0


@pytest.mark.parametrize("path, query", [
    ("/api/count/incr/badge.svg", "url=github.com/alice/repo"), ("/ghpvc/", "username=alice"),
    ("/github.com/alice/repo.svg", ""), ("/alice/repo.svg", ""), ("/api/visitors", "path=x"),
])
def test_head_never_counts(make_client, path, query):
    client, store = make_client()
    assert client.request("HEAD", path, query, headers=CAMO).status == 200
    assert store.page_count() == 0


def test_allow_list_sees_the_prefixed_page_id(make_client):
    client, store = make_client(allow=r"ghpvc:alice")
    assert "x-tally-error" not in client.get("/ghpvc/", "username=alice", headers=CAMO).headers
    refused = client.get("/alice/repo.svg")
    assert refused.headers["x-tally-error"] == "page_id not allowed"
    assert [p for p, _ in store.top(10)] == ["ghpvc:alice"]


def test_page_cap_applies_to_old_urls(make_client):
    client, store = make_client(max_pages=1)
    client.get("/alice/repo.svg")
    r = client.get("/alice/other.svg")
    assert r.headers["x-tally-error"] == "page limit reached"
    assert store.page_count() == 1


def test_camo_only_setting_applies_to_old_urls(make_client):
    client, _ = make_client(camo_only=True)
    client.get("/alice/repo.svg")
    client.get("/alice/repo.svg", headers=CAMO)
    assert total(client, "dwyl:alice/repo") == 1


# Moving: old URL -> page id ###################################################


@pytest.mark.parametrize("url, page_id", [
    ("https://hits.seeyoufarm.com/api/count/incr/badge.svg?url=https%3A%2F%2Fgithub.com%2Fa%2Fb",
     "hits:github.com/a/b"),
    ("https://komarev.com/ghpvc/?username=Alice&amp;color=green", "ghpvc:alice"),
    ("https://hits.sh/github.com/a/b.svg?view=today-total", "hitssh:github.com/a/b"),
    ("https://hits.dwyl.com/a/b.svg", "dwyl:a/b"),
    ("https://api.visitorbadge.io/api/visitors?path=https%3A%2F%2Fgithub.com%2Fa%2Fb",
     "visitorbadge:https://github.com/a/b"),
    ("https://visitor-badge.glitch.me/badge?page_id=a.b", "a.b"),
    ("https://visitor-badge.laobi.icu/badge?page_id=a.b&left_color=red", "a.b"),
])
def test_every_known_service_url_maps_to_a_page_id(url, page_id):
    assert flavours.moved(url)[0] == page_id
    assert flavours.moved(url)[1] == re.sub(r"^https://[^/]+", "", url)


@pytest.mark.parametrize("url", ["https://example.org/badge?page_id=x", "https://hits.sh/nodot.svg",
                                 "https://komarev.com/ghpvc/?username=-x-"])
def test_unknown_or_bad_urls_do_not_map(url):
    with pytest.raises(ParamError):
        flavours.moved(url)


def test_the_builder_shows_the_tally_url_for_an_old_one(client):
    page = client.get("/", "old_url=https%3A%2F%2Fhits.dwyl.com%2Falice%2Frepo.svg").text
    assert '<code id="moved-url">http://127.0.0.1/alice/repo.svg</code>' in page
    assert '<code id="moved-page-id">dwyl:alice/repo</code>' in page


def test_tallys_own_routes_are_never_an_old_services_url(make_client):
    # The ASGI front tries old badge URLs before bottle's routes: none of
    # Tally's own paths (bottle's table, and the fast ones) may match one.
    client, _ = make_client()
    rules = [route.rule for route in client.app.routes.routes if route.rule != routes.OLD_URLS]
    paths = [re.sub(r"<[^>]+>", "tally.css", rule) for rule in rules] + list(routes.FAST)
    assert "/stats" in paths and "/static/tally.css" in paths
    for path in paths:
        assert flavours.match_path(path) is None, path


# Hardening, round three ####################################################


def test_own_segments_are_the_first_segments_of_tallys_routes(make_client):
    client, _ = make_client()
    rules = [route.rule for route in client.app.routes.routes if route.rule != routes.OLD_URLS]
    segments = {rule[1:].split("/", 1)[0] for rule in rules + list(routes.FAST)}
    assert segments == routes.OWN_SEGMENTS


@pytest.mark.parametrize("path", ["/static/tally.svg", "/stats/x.svg", "/stats/x.json",
                                  "/badge/x.svg", "/healthz/x.svg", "/metrics/a.svg",
                                  "/api/alice.svg", "/static/github.com.svg"])
def test_paths_under_tallys_own_routes_count_nothing(make_client, path):
    client, store = make_client()
    assert client.get(path).status == 404
    assert store.page_count() == 0


@pytest.mark.parametrize("url", [
    "https://hits.dwyl.com/stats/repo.svg", "https://hits.dwyl.com/static/tally.svg",
])
def test_migrate_does_not_map_an_old_url_that_tallys_routes_would_shadow(url):
    with pytest.raises(ParamError):
        flavours.moved(url)


@pytest.mark.parametrize("page_id", ["ghpvc:alice", "hits:github.com/a/b", "hitssh:github.com/a/b",
                                     "dwyl:alice/repo", "visitorbadge:https://github.com/a/b"])
def test_the_native_badge_never_counts_into_an_old_services_page(make_client, page_id):
    client, store = make_client()
    r = client.get("/badge", f"page_id={page_id}")
    assert r.status == 200 and r.headers["x-tally-error"] == "reserved page_id"
    assert store.page_count() == 0
    # Shown without counting, it may be.
    store.set_total(page_id, 7)
    shown = client.get("/badge", f"page_id={page_id}&query_only=true")
    assert "x-tally-error" not in shown.headers and ">7<" in shown.text
    assert total(client, page_id) == 7


def test_an_id_that_only_looks_prefixed_counts_natively(make_client):
    client, store = make_client()
    assert "x-tally-error" not in client.get("/badge", "page_id=alice:repo").headers
    assert total(client, "alice:repo") == 1


def test_hitssh_keys_of_250_characters_count_and_251_are_refused(make_client):
    client, _ = make_client()
    key = "github.com/" + "a" * 239
    assert len(key) == 250
    r = client.get(f"/{key}.svg")
    assert "x-tally-error" not in r.headers and total(client, "hitssh:" + key) == 1
    refused = client.get(f"/{key}b.svg")
    assert refused.headers["x-tally-error"] == "urn too long"


def test_visitorbadge_paths_of_256_characters_count(make_client):
    client, _ = make_client()
    path = "https://example.org/" + "p" * 236
    assert len(path) == 256
    assert "x-tally-error" not in client.get("/api/visitors", f"path={path}").headers
    assert total(client, "visitorbadge:" + path) == 1
    assert client.get("/api/visitors", f"path={path}q").headers["x-tally-error"] == "page_id too long"


@pytest.mark.parametrize("route", ["/api/count/incr/badge.svg", "/api/count/keep/badge.svg",
                                   "/api/count/graph/dailyhits.svg"])
@pytest.mark.parametrize("url", ["http://%5Bx", "http://[x", "https://[::1", "http://a]b/"])
def test_a_hits_url_urllib_cannot_read_is_an_error_badge(make_client, caplog, route, url):
    client, store = make_client()
    r = client.get(route, "url=" + url.replace("[", "%5B").replace("]", "%5D"))
    assert r.status == 200 and r.headers["x-tally-error"] == "invalid url"
    assert store.page_count() == 0 and "Traceback" not in caplog.text


def test_the_builder_names_a_hits_url_it_cannot_read(client):
    page = client.get("/", "old_url=https%3A%2F%2Fhits.seeyoufarm.com%2Fapi%2Fcount%2Fincr%2F"
                           "badge.svg%3Furl%3Dhttp%3A%2F%2F%255Bx")
    assert page.status == 200 and "invalid url" in page.text


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_an_old_url_either_maps_or_raises_param_error(text):
    for template in ("https://hits.seeyoufarm.com/api/count/incr/badge.svg?url={}",
                     "https://hits.sh/{}.svg", "https://hits.dwyl.com/{}.svg",
                     "https://api.visitorbadge.io/api/visitors?path={}",
                     "https://komarev.com/ghpvc/?username={}"):
        try:
            flavours.moved(template.format(text))
        except ParamError:
            pass


# Themes on the old URLs (issue 31) ###########################################

OLD_BADGES = [("/api/count/incr/badge.svg", "url=github.com/alice/repo"),
              ("/ghpvc/", "username=alice"), ("/github.com/alice/repo.svg", ""),
              ("/alice/repo.svg", ""), ("/api/visitors", "path=x")]


@pytest.mark.parametrize("path, query", OLD_BADGES)
def test_every_old_badge_takes_tallys_theme(make_client, path, query):
    client, store = make_client()
    plain = client.get(path, query, headers=CAMO)
    join = "&" if query else ""
    dark = client.get(path, query + join + "theme=dark&right_color_dark=%23000000", headers=CAMO)
    assert '"#000000"' in dark.body.decode() and '"#000000"' not in plain.body.decode()
    auto = client.get(path, query + join + "theme=auto", headers=CAMO)
    assert b"tally-dark" in auto.body and b"tally-dark" not in plain.body
    [(page_id, views)] = store.top(10)
    assert views == 3  # each counted once, whatever its theme
    refused = client.get(path, query + join + "theme=dusk", headers=CAMO)
    assert refused.headers["x-tally-error"] == "invalid theme"
    assert total(client, page_id) == 3
