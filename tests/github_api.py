"""A local stand-in for GitHub's REST API (no test machine reaches GitHub):
a real HTTP server on loopback that answers the four traffic endpoints
with the status codes, headers and JSON shapes of GitHub's REST reference
("Repository traffic": views and clones per day for the last 14 days,
days without any left out; the top 10 referrers and paths), and a
repository's README ("Repository contents": its content in base64). Tally is
pointed at it through TALLY_GITHUB_API, as a user would point it at a
GitHub Enterprise Server.

A test sets, per repository, a history ({day: (views, visitors, clones,
cloners)}), the fake's own "today" (GitHub's window ends there), and a
failure to answer with instead ("401", "403", "404", "rate", "spent",
"429", "500", "hang", "malformed", "drip"). Every answer carries a Date
header, as GitHub's do: noon of the fake's today, unless `date` says
otherwise ("" leaves it out).
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import http.server
import json
import threading
import time

TOKEN = "ghp_t3stT0kenNeverShown0123456789abcdef"


class FakeGitHub:
    def __init__(self) -> None:
        self.histories: dict[str, dict[str, tuple[int, int, int, int]]] = {}
        self.failures: dict[str, str] = {}
        self.referrers: dict[str, list[dict]] = {}
        self.today = datetime.datetime.now(datetime.timezone.utc).date()
        self.token = TOKEN
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.retry_after = 120
        self.hang_s = 30.0
        self.hanging = 0  # requests held by a "hang" right now
        self.date: str | None = None  # the Date header; None: noon of today
        self.drip_s = 0.2  # "drip": one byte of the answer every drip_s
        self.headers: dict[str, str] = {}  # more headers for every answer
        self.extra: dict[str, list[dict]] = {}  # more items for a views answer
        # READMEs ("Get a repository README"): public, or private (only the
        # token reads them; without it GitHub answers 404, as it does).
        self.readmes: dict[str, str] = {}
        self.private: set[str] = set()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                fake.requests.append((self.path, dict(self.headers)))
                fake.answer(self)

            def log_message(self, *args: object) -> None:
                pass

            def send_response(self, code: int, message: str | None = None) -> None:
                self.send_response_only(code, message)
                if fake.date != "":
                    self.send_header("Date", fake.date_header())

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def date_header(self) -> str:
        if self.date is not None:
            return self.date
        noon = datetime.datetime.combine(self.today, datetime.time(12),
                                         tzinfo=datetime.timezone.utc)
        return email.utils.format_datetime(noon, usegmt=True)

    def window(self) -> list[str]:
        return [(self.today - datetime.timedelta(days=back)).isoformat()
                for back in range(13, -1, -1)]

    def answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        path, _, query = handler.path.partition("?")
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[0] == "repos" and parts[3] == "readme":
            return self.readme(handler, f"{parts[1]}/{parts[2]}".lower())
        # /repos/{owner}/{repo}/traffic/{views|clones|popular/referrers|popular/paths}
        if len(parts) < 5 or parts[0] != "repos" or parts[3] != "traffic":
            return self.send(handler, 404, {"message": "Not Found"})
        repo = f"{parts[1]}/{parts[2]}".lower()
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            return self.send(handler, 401, {"message": "Bad credentials"})
        failure = self.failures.get(repo)
        if failure == "hang":
            self.hanging += 1
            try:
                time.sleep(self.hang_s)
            finally:
                self.hanging -= 1
            return None
        if failure == "drip":  # a valid answer, a byte at a time
            data = json.dumps({"count": 0, "uniques": 0, "views": []}).encode()
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            for i in range(len(data)):
                handler.wfile.write(data[i:i + 1])
                handler.wfile.flush()
                time.sleep(self.drip_s)
            return None
        if failure == "malformed":
            return self.send(handler, 200, b'{"count": 3, "views": [')
        if failure == "403":
            return self.send(handler, 403, {"message": "Must have push access to repository"})
        if failure == "rate":
            reset = int(time.time()) + self.retry_after
            return self.send(handler, 403, {"message": "API rate limit exceeded"},
                             {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)})
        if failure == "spent":  # the primary limit, without saying when it resets
            return self.send(handler, 403, {"message": "API rate limit exceeded"},
                             {"x-ratelimit-remaining": "0"})
        if failure == "429":
            return self.send(handler, 429, {"message": "secondary rate limit"},
                             {"Retry-After": str(self.retry_after)})
        if failure == "500":
            return self.send(handler, 500, {"message": "Server Error"})
        if repo not in self.histories or failure == "404":
            return self.send(handler, 404, {"message": "Not Found"})
        kind = "/".join(parts[4:])
        history = self.histories[repo]
        if kind in ("views", "clones"):
            column = 0 if kind == "views" else 2
            listed = [(day, history[day][column], history[day][column + 1])
                      for day in self.window() if day in history and history[day][column]]
            return self.send(handler, 200, {
                "count": sum(c for _, c, _ in listed), "uniques": sum(u for _, _, u in listed),
                kind: [{"timestamp": f"{day}T00:00:00Z", "count": c, "uniques": u}
                       for day, c, u in listed] + (self.extra.get(repo, []) if kind == "views"
                                                   else [])})
        if kind == "popular/referrers":
            return self.send(handler, 200, self.referrers.get(repo, [
                {"referrer": "github.com", "count": 4, "uniques": 3},
                {"referrer": "news.ycombinator.com", "count": 2, "uniques": 2}]))
        if kind == "popular/paths":
            return self.send(handler, 200, [
                {"path": f"/{repo}", "title": f"{repo}: a repository", "count": 5, "uniques": 3}])
        return self.send(handler, 404, {"message": "Not Found"})

    def readme(self, handler: http.server.BaseHTTPRequestHandler, repo: str) -> None:
        failure = self.failures.get(repo)
        if failure == "hang":
            time.sleep(self.hang_s)
            return None
        if failure == "500":
            return self.send(handler, 500, {"message": "Server Error"})
        token = handler.headers.get("Authorization") == f"Bearer {self.token}"
        if repo not in self.readmes or repo in self.private and not token:
            return self.send(handler, 404, {"message": "Not Found"})
        text = self.readmes[repo].encode()
        return self.send(handler, 200, {
            "type": "file", "encoding": "base64", "size": len(text), "name": "README.md",
            "path": "README.md", "content": base64.encodebytes(text).decode("ascii")})

    def send(self, handler: http.server.BaseHTTPRequestHandler, status: int, body: object,
             headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in {**self.headers, **(headers or {})}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)


def history(first: datetime.date, days: int, start: int = 1) -> dict[str, tuple[int, int, int, int]]:
    """A history of `days` days from first: day n has n + start views,
    visitors about half of them, and a clone every third day."""
    found = {}
    for n in range(days):
        views = n + start
        found[(first + datetime.timedelta(days=n)).isoformat()] = (
            views, (views + 1) // 2, 1 if n % 3 == 0 else 0, 1 if n % 3 == 0 else 0)
    return found
