"""Run `galscale <args>` with a pause point in the tile writer, so a test can kill the job
at an exact moment:

    python fault_driver.py POINT N MARKER -- classify --survey ... --out ...

POINT `before-write`: pause when the job is about to write its (N+1)-th tile, before any byte
of it (N=0: before any tile finished). POINT `after-tile-file`: pause after the (N+1)-th tile's
Parquet file is written, before its manifest. At the pause the driver creates MARKER and waits
to be killed (SIGKILL from the test); nothing in galscale is changed but the timing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def _pause(marker: str) -> None:
    Path(marker).write_text("paused")
    while True:
        time.sleep(60)


def main() -> int:
    point, n, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    args = sys.argv[sys.argv.index("--") + 1:]
    from galscale import catalog, cli

    if point == "before-write":
        write = catalog.write_tile_catalog
        calls = [0]

        def paused_write(*a, **kw):
            if calls[0] == n:
                _pause(marker)
            calls[0] += 1
            return write(*a, **kw)

        catalog.write_tile_catalog = paused_write
    elif point == "after-tile-file":
        put = catalog._put_bytes
        files = [0]

        def paused_put(url, data, options):
            put(url, data, options)
            if "/tiles/" in url:
                if files[0] == n:
                    _pause(marker)
                files[0] += 1

        catalog._put_bytes = paused_put
    else:
        raise SystemExit(f"unknown pause point {point!r}")
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
