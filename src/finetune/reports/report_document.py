"""The sweep report as a list of blocks, rendered twice from the same blocks: Markdown that links
the PNG files, and one self-contained HTML file (figures base64-embedded, inline CSS, no request
to anywhere) that reads well in a browser offline. One source, so the two never disagree."""

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.reports.markdown import format_cell, markdown_table


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str  # `code` spans and **bold** are the only markup


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]
    digits: int = 4


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class KeyFigure:
    label: str
    value: str
    detail: str = ""  # a smaller line under the value in HTML, in brackets in Markdown

    def text(self) -> str:
        return f"{self.value} ({self.detail})" if self.detail else self.value


@dataclass
class KeyFigures:
    """The first screen: a few labelled values (a row of cards in HTML, a table in Markdown)."""

    items: list[KeyFigure]


Block = Heading | Paragraph | Bullets | Table | Figure | KeyFigures


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)


def anchor(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", text.lower()).strip().replace(" ", "-")


def to_markdown(document: Document, base: Path) -> str:
    """Markdown; figures as links relative to `base` (the folder the .md file is written to)."""
    parts = [f"# {document.title}\n"]
    for block in document.blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}\n")
        elif isinstance(block, Paragraph):
            parts.append(block.text + "\n")
        elif isinstance(block, Bullets):
            parts.append("".join(f"- {item}\n" for item in block.items))
        elif isinstance(block, Table):
            parts.append(markdown_table(block.header, block.rows, block.digits))
        elif isinstance(block, Figure):
            link = Path(os.path.relpath(block.path, base)).as_posix()
            parts.append(f"![{block.caption}]({link})\n\n*{block.caption}*\n")
        elif isinstance(block, KeyFigures):
            parts.append(
                markdown_table([i.label for i in block.items], [[i.text() for i in block.items]])
            )
    return "\n".join(parts)


def _inline(text: str) -> str:
    """Escape, then render `code` and **bold**."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int) -> str:
    def cell(tag: str, value: Any) -> str:
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        text = format_cell(value, digits).replace("\\|", "|")
        return f"<{tag}{' class=num' if numeric else ''}>{_inline(text)}</{tag}>"

    head = "".join(cell("th", h) for h in header)
    body = "".join("<tr>" + "".join(cell("td", v) for v in row) + "</tr>" for row in rows)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _embedded_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_html(document: Document) -> str:
    """One HTML file that needs nothing else: CSS inline, every figure a data: URI."""
    headings = [b for b in document.blocks if isinstance(b, Heading) and b.level == 2]
    contents = "".join(
        f'<li><a href="#{anchor(h.text)}">{_inline(h.text)}</a></li>' for h in headings
    )
    body = []
    for block in document.blocks:
        if isinstance(block, Heading):
            tag = f"h{block.level}"
            body.append(f'<{tag} id="{anchor(block.text)}">{_inline(block.text)}</{tag}>')
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            body.append(_html_table(block.header, block.rows, block.digits))
        elif isinstance(block, Figure):
            body.append(
                f'<figure><img src="{_embedded_png(block.path)}" '
                f'alt="{html.escape(block.caption)}">'
                f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
            )
        elif isinstance(block, KeyFigures):
            cards = "".join(
                f'<div class="card"><div class="label">{_inline(item.label)}</div>'
                f'<div class="value">{_inline(item.value)}</div>'
                + (f'<div class="detail">{_inline(item.detail)}</div>' if item.detail else "")
                + "</div>"
                for item in block.items
            )
            body.append(f'<div class="cards">{cards}</div>')
            body.append(f"<nav><strong>Contents</strong><ol>{contents}</ol></nav>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(document.title)}</title><style>{CSS}</style></head>\n"
        f"<body><main><h1>{_inline(document.title)}</h1>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )


CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #d9e2ec; --accent: #2c5282; --soft: #f0f4f8; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--soft); color: var(--ink);
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 28px 40px 60px; background: #fff;
  min-height: 100vh; box-shadow: 0 0 24px rgba(0, 0, 0, .06); }
h1 { font-size: 28px; margin: 4px 0 6px; color: var(--accent); }
h2 { font-size: 21px; margin: 38px 0 10px; padding-bottom: 6px;
  border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 24px 0 8px; }
p, ul { margin: 8px 0; } code { background: var(--soft); padding: 1px 5px; border-radius: 4px;
  font-size: 13px; overflow-wrap: anywhere; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 18px 0; }
.card { flex: 1 1 120px; background: var(--soft); border-left: 4px solid var(--accent);
  border-radius: 6px; padding: 10px 14px; }
.card:first-child { flex: 0 1 auto; max-width: 300px; } /* the winner: as wide as its setting */
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; }
.card .value { font-size: 19px; font-weight: 600; margin-top: 2px; overflow-wrap: anywhere; }
.card .detail { font-size: 13px; margin-top: 2px; overflow-wrap: break-word; }
nav { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 18px; }
nav ol { margin: 6px 0 0; columns: 2; } nav a { color: var(--accent); text-decoration: none; }
.scroll { overflow-x: auto; margin: 10px 0; }
table { border-collapse: collapse; font-size: 13.5px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 12px; text-align: left; }
th { background: var(--soft); font-weight: 600; } td.num, th.num { text-align: right;
  font-variant-numeric: tabular-nums; }
tbody tr:hover { background: #f7fafc; }
figure { margin: 14px 0 22px; } figure img { max-width: 100%; max-height: 520px; width: auto;
  height: auto;
  border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
"""
