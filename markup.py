"""Where the code is in a person's Markdown, HTML and reStructuredText files.

`migrate` rewrites old counters' badge URLs in README files, but a URL in a
code example (a fenced or indented block, `inline code`, <pre> or <code>, a
reStructuredText literal block) is an example, not a badge: it stays as
written unless the person asks (--include-code). code_spans(text, kind) gives
the character ranges of such code.

Markdown is read by markdown-it-py (CommonMark), the one library here that
knows a list's indented paragraph from an indented code block; HTML by the
standard library's html.parser; reStructuredText's literal blocks are plain
indentation, read here. Pure functions: no files, no database, no HTTP.
"""

from __future__ import annotations

import bisect
import html.parser
import os
import re

import markdown_it

KINDS = {".md": "markdown", ".markdown": "markdown", ".mdown": "markdown", ".mkd": "markdown",
         ".mdx": "markdown", ".html": "html", ".htm": "html", ".xhtml": "html",
         ".rst": "rst", ".rest": "rst"}


def kind_of(path: str) -> str:
    """The markup of a file by its name; README, .txt and the rest are
    read as Markdown (what a README without an extension usually is)."""
    return KINDS.get(os.path.splitext(path)[1].lower(), "markdown")


class Lines:
    """Offsets of line starts: a line number or a line's offset in O(log n).

    >>> Lines("a\\nbc\\n").number(3), Lines("a\\nbc\\n").start(1)
    (2, 2)
    """

    def __init__(self, text: str):
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.length = len(text)

    def number(self, offset: int) -> int:
        """The 1-based line of a character offset."""
        return bisect.bisect_right(self.starts, offset)

    def start(self, line: int) -> int:
        """The offset where a 0-based line starts (the text's end past the last)."""
        return self.starts[line] if line < len(self.starts) else self.length


def code_spans(text: str, kind: str) -> list[tuple[int, int]]:
    """(start, end) character ranges of code in text, sorted."""
    lines = Lines(text)
    spans = {"markdown": _markdown, "html": _html, "rst": _rst}[kind](text, lines)
    return sorted(spans)


def inside(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """True when [start, end) lies within one of the sorted spans."""
    i = bisect.bisect_right(spans, (start, float("inf"))) - 1
    return i >= 0 and spans[i][0] <= start and end <= spans[i][1]


# CommonMark's blocks, and of the inline rules only those that find code
# spans (links and images took nine tenths of the time and find none).
_MARKDOWN = markdown_it.MarkdownIt("commonmark")
_MARKDOWN.inline.ruler.enableOnly(["text", "newline", "escape", "backticks"])
_MARKDOWN.inline.ruler2.enableOnly([])


def _markdown(text: str, lines: Lines) -> list[tuple[int, int]]:
    spans = []
    for token in _MARKDOWN.parse(text):
        if token.map is None:
            continue
        first, last = lines.start(token.map[0]), lines.start(token.map[1])
        if token.type in ("fence", "code_block"):
            spans.append((first, last))
        elif token.type == "inline":
            # Inline code has no position of its own: its text, found in the
            # lines of its paragraph.
            for child in token.children or []:
                if child.type == "code_inline" and child.content:
                    at = text.find(child.content, first, last)
                    while at != -1:
                        spans.append((at, at + len(child.content)))
                        at = text.find(child.content, at + 1, last)
        elif token.type == "html_block":
            spans.extend((first + a, first + b) for a, b in _html(text[first:last], Lines(
                text[first:last])))
    return spans


class _CodeElements(html.parser.HTMLParser):
    CODE = ("pre", "code", "script", "textarea")

    def __init__(self, lines: Lines):
        super().__init__(convert_charrefs=False)
        self.lines, self.open, self.spans = lines, [], []

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.lines.start(line - 1) + column

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.CODE:
            self.open.append((tag, self._offset()))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i][0] == tag:
                self.spans.append((self.open[i][1], self._offset()))
                del self.open[i:]
                return


def _html(text: str, lines: Lines) -> list[tuple[int, int]]:
    parser = _CodeElements(lines)
    parser.feed(text)
    parser.close()
    # An element left open runs to the end, as a browser shows it.
    return parser.spans + [(start, len(text)) for _, start in parser.open]


_RST_CODE_DIRECTIVE = re.compile(r"\s*\.\.\s+(code|code-block|sourcecode)::")


def _rst(text: str, lines: Lines) -> list[tuple[int, int]]:
    """Literal blocks: the indented lines after a paragraph ending in "::"
    or a code directive, up to the first line indented no deeper."""
    spans = []
    rows = text.split("\n")
    i = 0
    while i < len(rows):
        row = rows[i]
        if row.rstrip().endswith("::") or _RST_CODE_DIRECTIVE.match(row):
            indent = len(row) - len(row.lstrip())
            end = i + 1
            while end < len(rows) and (not rows[end].strip()
                                       or len(rows[end]) - len(rows[end].lstrip()) > indent):
                end += 1
            if end > i + 1:
                spans.append((lines.start(i + 1), lines.start(end)))
            i = end
            continue
        i += 1
    return spans
