"""The survey report: `galscale report RUN --out DIR` -> a static HTML page with PNG figures.

`build_report` (in `build.py`) reads a finished run folder (`run.py`), draws catalog-level
figures from column aggregates (`figures.py`), a gallery of re-cut and denoised cutouts
(`gallery.py`), and renders the page (`html.py`). See docs/report.md.
"""

from galscale.report.build import INDEX, ReportResult, build_report
from galscale.report.run import RunFolderError, open_run

__all__ = ["build_report", "ReportResult", "INDEX", "open_run", "RunFolderError"]
