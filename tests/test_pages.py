"""pages.py: what a page id names, resolved once, and its numbers."""

from __future__ import annotations

import re

import pytest

import pages
from params import ParamError


@pytest.mark.parametrize("text, expected", [
    ("alice.my-repo", pages.Named("alice.my-repo", pages.COUNTER)),
    ("ghpvc:alice", pages.Named("ghpvc:alice", pages.SERVICE)),
    ("hits:github.com/a/b", pages.Named("hits:github.com/a/b", pages.SERVICE)),
    ("github:Alice/My-Repo", pages.Named("github:alice/my-repo", pages.GITHUB, "alice/my-repo")),
    ("alice:repo", pages.Named("alice:repo", pages.COUNTER)),  # not a service's prefix
])
def test_a_page_id_is_named_once(text, expected):
    assert pages.name(text) == expected
    assert expected.countable == (expected.kind != pages.GITHUB)


def test_tally_allow_applies_to_every_page_but_githubs():
    allow = re.compile(r"alice\..*")
    assert pages.name("alice.x", allow).page_id == "alice.x"
    for refused in ("bob.x", "ghpvc:alice"):
        with pytest.raises(ParamError, match="not allowed"):
            pages.name(refused, allow)
    assert pages.name("github:bob/x", allow).repo == "bob/x"  # nobody can create one from outside


@pytest.mark.parametrize("text, problem", [(None, "missing page_id"), ("", "empty page_id"),
                                           ("github:not a repo", "github")])
def test_a_bad_page_id_is_refused(text, problem):
    with pytest.raises(ParamError, match=problem):
        pages.name(text)


def test_numbers_of_each_kind(any_store):
    any_store.record_view("alice.x")
    assert pages.numbers(any_store, pages.name("alice.x")).counts.total == 1
    assert pages.numbers(any_store, pages.name("nobody.x")).counts.total == 0
    with pytest.raises(ParamError, match="repository not kept"):
        pages.numbers(any_store, pages.name("github:alice/x"))
