"""config.py: settings from the environment, flags over them, docs/settings.md lists them all."""

from __future__ import annotations

import dataclasses

import pytest

import config
from conftest import ROOT


def test_defaults_serve_locally_from_data_folder():
    c = config.from_env({})
    assert (c.host, c.port, c.db, c.sync) == ("127.0.0.1", 8080, "data/counts.db", "full")


def test_environment_sets_every_field():
    c = config.from_env({"TALLY_HOST": "0.0.0.0", "TALLY_PORT": "9000", "TALLY_DB": "/x.db",
                         "TALLY_THREADS": "4", "TALLY_SYNC": "NORMAL", "TALLY_METRICS": "1",
                         "TALLY_ALLOW": "a.*", "TALLY_MAX_PAGES": "10", "TALLY_CAMO_ONLY": "yes",
                         "TALLY_QUIET": "true", "TALLY_TRUSTED_PROXY": "",
                         "TALLY_CONNECTION_LIMIT": "50", "TALLY_IDLE_TIMEOUT": "10",
                         "TALLY_MAX_HEADER_BYTES": "16384", "TALLY_BUSY_TIMEOUT": "1.5"})
    assert c == config.Config(host="0.0.0.0", port=9000, db="/x.db", threads=4, sync="normal",
                              metrics=True, allow="a.*", max_pages=10, camo_only=True, quiet=True,
                              trusted_proxy=None, connection_limit=50, channel_timeout=10,
                              max_header_bytes=16384, busy_timeout=1.5)


def test_flags_override_the_environment():
    c = config.from_env({"TALLY_PORT": "9000"}).with_overrides(port=9100, host=None)
    assert (c.port, c.host) == (9100, "127.0.0.1")


@pytest.mark.parametrize("name, value, message", [
    ("TALLY_PORT", "eighty", "TALLY_PORT must be a number"),
    ("TALLY_PORT", "70000", "TALLY_PORT must be 0..65535"),
    ("TALLY_THREADS", "0", "TALLY_THREADS must be 1..256"),
    ("TALLY_SYNC", "sometimes", "TALLY_SYNC must be full or normal"),
    ("TALLY_METRICS", "maybe", "TALLY_METRICS must be 1 or 0"),
    ("TALLY_ALLOW", "(", "TALLY_ALLOW is not a regular expression"),
    ("TALLY_MAX_PAGES", "0", "TALLY_MAX_PAGES must be a positive number"),
    ("TALLY_MAX_HEADER_BYTES", "8191", "TALLY_MAX_HEADER_BYTES must be 8192..1048576"),
    ("TALLY_CONNECTION_LIMIT", "0", "TALLY_CONNECTION_LIMIT must be 1..100000"),
    ("TALLY_IDLE_TIMEOUT", "61", "TALLY_IDLE_TIMEOUT must be 1..60 seconds"),
    ("TALLY_BUSY_TIMEOUT", "-1", "TALLY_BUSY_TIMEOUT must be 0..600 seconds"),
])
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        config.from_env({name: value})


def test_every_setting_is_in_the_docs():
    settings = (ROOT / "docs" / "settings.md").read_text()
    for name in config.ENVIRONMENT:
        assert f"`{name}`" in settings, name
    fields = {f.name for f in dataclasses.fields(config.Config)}
    assert fields == {field for field, _ in config.ENVIRONMENT.values()}


def test_every_make_target_is_documented_in_help():
    makefile = (ROOT / "Makefile").read_text()
    import re
    phony = set(re.findall(r"^\.PHONY: (\S+)", makefile, re.MULTILINE))
    documented = set(re.findall(r"^([a-z-]+):.*## ", makefile, re.MULTILINE))
    assert phony == documented and {"run", "test", "bench", "golden", "backup"} <= phony


@pytest.mark.parametrize("api, refused", [
    ("http://github.example.com/api/v3", True), ("http://192.0.2.10", True),
    ("http://[2001:db8::1]/api", True), ("http://localhost.example.com", True),
    ("http://127.0.0.1:8000", False), ("http://localhost:9", False), ("http://[::1]:80", False),
    ("https://github.example.com/api/v3", False)])
def test_a_plain_http_github_api_is_refused_unless_it_is_loopback(api, refused):
    if refused:
        with pytest.raises(config.ConfigError, match="in clear"):
            config.Config(github_api=api)
    else:
        assert config.Config(github_api=api).github_api == api
