"""Write fonts/*.json.gz: the character width tables shields.io measures
badge text with, taken from the npm package anafanafo (badge-maker's own
dependency, by the shields.io maintainers) so Tally's widths are shields'.

    npm install --prefix .node anafanafo@2.0.0
    python scripts/width_tables.py .node/node_modules/anafanafo/data

Each table is a list of [first code point, last code point, width in px],
kept as anafanafo ships it; badge.py reads them (gzip keeps the repository
small: about 70 KB each instead of 220 KB).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

TABLES = ("verdana-11px-normal", "verdana-10px-normal", "verdana-10px-bold", "helvetica-11px-bold")
OUT = Path(__file__).resolve().parent.parent / "fonts"


def main(source: str) -> None:
    OUT.mkdir(exist_ok=True)
    for name in TABLES:
        ranges = json.loads((Path(source) / f"{name}.json").read_text())
        assert all(len(r) == 3 and r[0] <= r[1] for r in ranges), name
        data = json.dumps(ranges, separators=(",", ":")).encode()
        # mtime=0: the same table always gives the same bytes.
        (OUT / f"{name}.json.gz").write_bytes(gzip.compress(data, mtime=0))
        print(f"fonts/{name}.json.gz: {len(ranges)} ranges")


if __name__ == "__main__":
    main(sys.argv[1])
