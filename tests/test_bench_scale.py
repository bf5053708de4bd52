"""bench/scale.py's generator writes what Tally's own counting would."""

from __future__ import annotations

import datetime

from bench import scale
import storage


def test_generated_pages_are_what_tally_would_have_counted(backend_db, make_store):
    scale.generate(backend_db, 40, days=5)
    store = make_store()
    today = storage.utc_now().date()
    days = [(today - datetime.timedelta(days=back)).isoformat() for back in range(4, -1, -1)]
    pages = list(store.pages())
    assert [p.page_id for p in pages] == [scale.PAGE_ID % i for i in range(40)]
    assert store.page_count() == 40
    for p in pages:
        assert len(p.page_id) == 22 and sorted(p.days) == days
        assert p.total == sum(p.days.values()) and p.visitors == sum(p.visitor_days.values())
        assert all(0 < p.visitor_days[d] <= p.days[d] for d in p.visitor_days)
        assert p.created_at == days[0] + "T00:00:00Z"
    assert any(p.bot_days for p in pages)
    # Each day is a view day, as the writer records them (TALLY_KEEP_DAYS reads them).
    assert make_store(keep_days=2).kept_from(storage.utc_now() + datetime.timedelta(days=99)) \
        == days[-2]
    # Counting goes on from there: an existing page, and a new one with a key of its own.
    first = pages[0]
    assert store.record_view(first.page_id).total == first.total + 1
    assert store.record_view("brand-new").total == 1
    assert store.page("brand-new").days == {days[-1]: 1}
    assert store.page(first.page_id).days[days[-1]] == first.days[days[-1]] + 1
