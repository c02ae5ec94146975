"""The report page: sections of text, tables and figures rendered to one static HTML file.

The page needs no server and no network: figures are PNG files next to it, linked by relative
names; the stylesheet is inline; every text is HTML-escaped.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Figure:
    """A PNG in the report folder (relative file name) and its caption."""

    file: str
    caption: str
    wide: bool = False  # spans the full page width


@dataclass
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[object]]
    caption: str = ""


@dataclass
class Section:
    """One report section; `missing` (a reason) replaces the content when there is no data."""

    id: str
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    missing: str = ""


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1b1b1b;
background:#f4f5f7}
header{background:#14213d;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px;font-size:24px}
header p{margin:2px 0;color:#cfd6e6;font-size:13px}
nav{background:#fff;border-bottom:1px solid #dde;padding:8px 32px;font-size:13px}
nav a{margin-right:14px;color:#1f4e9c;text-decoration:none}
main{padding:8px 32px 40px;max-width:1200px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:6px;margin:16px 0;
padding:12px 20px}
h2{font-size:18px;margin:6px 0 10px;color:#14213d}
p{font-size:14px;line-height:1.45;margin:6px 0}
.missing{color:#8a5a00;background:#fff7e0;border-left:4px solid #f0b400;padding:6px 10px}
.figs{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;flex:1 1 420px;max-width:560px}
figure.wide{flex-basis:100%;max-width:1000px}
figure img{width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12px;color:#555;margin-top:3px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 12px}
caption{text-align:left;font-weight:600;font-size:13px;padding-bottom:4px}
th,td{border:1px solid #dde;padding:3px 9px;text-align:left}
th{background:#eef1f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:12px;background:#f0f2f5;padding:1px 3px}
pre{font-size:12px;background:#f0f2f5;padding:8px;white-space:pre-wrap}
"""


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return f"<td>{value}</td>"
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def render_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in table.rows)
    cap = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_section(section: Section) -> str:
    parts = [f'<section id="{html.escape(section.id)}"><h2>{html.escape(section.title)}</h2>']
    if section.missing:
        parts.append(f'<p class="missing">{html.escape(section.missing)}</p>')
    parts += [f"<p>{html.escape(t)}</p>" for t in section.text]
    parts += [render_table(t) for t in section.tables]
    if section.figures:
        parts.append('<div class="figs">')
        for f in section.figures:
            cls = ' class="wide"' if f.wide else ""
            src = html.escape(f.file)
            parts.append(f'<figure{cls}><a href="{src}"><img src="{src}" alt="'
                         f'{html.escape(f.caption)}"></a><figcaption>'
                         f"{html.escape(f.caption)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def render_page(title: str, subtitle: Sequence[str], sections: Sequence[Section],
                links: Sequence[tuple[str, str]] = ()) -> str:
    """The whole page; `links` are extra (relative file, label) entries in the navigation."""
    nav = "".join(f'<a href="#{html.escape(s.id)}">{html.escape(s.title)}</a>' for s in sections)
    nav += "".join(f'<a href="{html.escape(f)}">{html.escape(label)}</a>' for f, label in links)
    sub = "".join(f"<p>{html.escape(s)}</p>" for s in subtitle)
    body = "\n".join(render_section(s) for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1>{sub}</header><nav>{nav}</nav>"
            f"<main>\n{body}\n</main></body></html>\n")


def write_page(path: str | os.PathLike[str], page: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


__all__ = ["Figure", "Table", "Section", "render_table", "render_section", "render_page",
           "write_page"]
