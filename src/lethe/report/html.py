"""The report builder: one list of blocks, rendered as ``report.md`` and a self-contained ``report.html``.

``report.html`` needs nothing else: figures are embedded as base64 PNG, the CSS is inline, there is no
JavaScript and no network reference, so it can be mailed or archived alone. ``report.md`` points at the
same figures saved as ``figures/<name>.png`` next to it. Every piece of text is HTML-escaped.

Numbers in tables and key/value lists go through :func:`format_value`: floats with three decimals
(scientific notation when tiny, thousands separators when large), and a percentage when the key names a
rate (``exact_match_rate=0.25`` -> ``25.0%``; ``learning_rate`` is left alone).
"""

from __future__ import annotations

import base64
import html
import math
import numbers
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lethe.errors import LetheError
from lethe.report.figures import PNG_MAGIC
from lethe.runs import atomic_write_bytes, atomic_write_text

__all__ = ["NOTE_KINDS", "Report", "format_value", "is_rate_key"]

WIDE_TABLE_COLUMNS = 8  # tables with more columns get the compact "wide" style
NOTE_KINDS = {"info": "Note", "ok": "Holds", "warning": "Warning"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_RATE = re.compile(r"(^|[_-])rates?($|[_-])")
_NOT_RATES = ("learning_rate", "lr_rate", "warmup_rate", "sample_rate", "sampling_rate", "bit_rate")


def _version() -> str:
    try:
        from lethe import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover - lethe is always importable from here
        return "unknown"


def is_rate_key(key: object) -> bool:
    """Whether a column / metric name says its value is a rate (a fraction to show as a percentage).

    The last dotted segment, spaces read as underscores, must contain the word ``rate`` (``exact_match_rate``,
    ``tpr rate``, ``rate``) or end in ``_frac`` / ``fraction``; ``learning_rate`` / ``learning rate`` and the
    like are not fractions.
    """
    last = re.split(r"[./]", str(key).lower())[-1].replace(" ", "_")  # "learning rate" = learning_rate
    if any(n in last for n in _NOT_RATES):
        return False
    return bool(_RATE.search(last)) or last.endswith(("_frac", "fraction"))


def format_value(value: Any, key: object = "") -> str:
    """A cell's text: ``None`` -> "—", bools -> yes/no, rates -> "12.5%", floats -> 3 decimals (3 digits below 0.01)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        big = abs(int(value)) >= 100_000 and not any(w in str(key).lower() for w in ("seed", "id", "year"))
        return f"{int(value):,}" if big else str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return "n/a"
        if math.isinf(number):
            return "∞" if number > 0 else "−∞"
        if key and is_rate_key(key) and 0.0 <= number <= 1.0:
            pct = 100.0 * number
            return f"{pct:.2g}%" if 0 < pct < 0.1 else f"{pct:.1f}%"
        if number == 0:
            return "0"
        if abs(number) < 1e-2:  # 3 significant digits: "0.00714", not "0.007"
            return f"{number:.3g}"
        if abs(number) >= 1e4:
            return f"{number:,.0f}"
        return f"{number:.3f}"
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v, key) for v in value)
    return str(value)


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, read from its IHDR chunk ((0, 0) if unreadable)."""
    if len(png) < 24:
        return 0, 0
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _aspect(png: bytes) -> float:
    """Width / height of a PNG (1.0 if unreadable)."""
    width, height = _png_size(png)
    return width / height if height else 1.0


_NUMBER_TEXT = re.compile(r"^[-+−]?[\d,]*\.?\d+(e[-+]?\d+)?\s*(%|pp)?$")


_NUM_CLASS = ' class="num"'


def _numeric(value: Any) -> bool:
    """Right-align: numbers, and strings that are pre-formatted numbers ("+1.5 pp", "12%")."""
    if isinstance(value, bool):
        return False
    return isinstance(value, numbers.Real) or (isinstance(value, str) and bool(_NUMBER_TEXT.match(value)))


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_text(text: str) -> str:
    """Text for a Markdown line: HTML-escaped (it sits next to <mark> tags) and Markdown syntax inert."""
    return re.sub(r"([\\`*_\[\]|#~])", r"\\\1", html.escape(text, quote=False)).replace("\n", "⏎ ")


def _marked(pieces: Sequence[tuple[str, bool]], escape: Any) -> str:
    """Token texts joined, each run of tokens that differ from the other side wrapped in ``<mark>``."""
    out, run = [], []
    for text, same in pieces:
        if same:
            if run:
                out.append(f"<mark>{escape(''.join(run))}</mark>")
                run = []
            out.append(escape(text))
        else:
            run.append(text)
    if run:
        out.append(f"<mark>{escape(''.join(run))}</mark>")
    return "".join(out)


@dataclass
class _Block:
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Figure:
    name: str
    png: bytes
    caption: str


class Report:
    """Collects headings, paragraphs, tables, figures, key/value lists and notes; :meth:`write` renders them.

    Example::

        report = Report("Goldfish demo", subtitle="standard vs goldfish k=4")
        report.add_note("headline holds: goldfish memorizes less", kind="ok")
        report.add_table([{"model": "standard", "exact_match_rate": 0.9}], caption="extraction")
        report.add_figure("rouge", figures.rouge_distribution({...}), caption="ROUGE-L per document")
        md_path, html_path = report.write(run_dir)
    """

    def __init__(self, title: str, subtitle: str | None = None, *, created: float | None = None) -> None:
        self.title = str(title)
        self.subtitle = subtitle
        self.created = time.time() if created is None else created
        self.blocks: list[_Block] = []
        self.figures: dict[str, _Figure] = {}

    # -- building -------------------------------------------------------------------------------------

    def add_heading(self, text: str) -> Report:
        """A section heading (level 2; the title is level 1)."""
        self.blocks.append(_Block("heading", {"text": str(text)}))
        return self

    def add_paragraph(self, text: str) -> Report:
        """A paragraph of plain text (escaped, no markup)."""
        self.blocks.append(_Block("paragraph", {"text": str(text)}))
        return self

    def add_table(self, rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
                  header: Sequence[str] | None = None, caption: str | None = None, *,
                  highlight: Iterable[int] = (), row_keys: Sequence[str] | None = None) -> Report:
        """A table from dict rows (header = their keys in first-seen order) or from ``header`` + list rows.

        Values are formatted by :func:`format_value` with the column name as key, or with ``row_keys[i]``
        when given (for tables whose rows are metrics). Rows whose index is in ``highlight`` are marked.
        """
        rows = list(rows)
        if rows and all(isinstance(r, Mapping) for r in rows):
            columns = list(header) if header is not None else list(dict.fromkeys(k for r in rows for k in r))
            cells = [[r.get(c) for c in columns] for r in rows]
        elif all(not isinstance(r, Mapping | str) and isinstance(r, Sequence) for r in rows):
            if header is None:
                raise LetheError("add_table: rows given as lists need a header")
            columns = list(header)
            cells = [list(r) for r in rows]
            for i, row in enumerate(cells):
                if len(row) != len(columns):
                    raise LetheError(f"add_table: row {i} has {len(row)} cells, the header {len(columns)}")
        else:
            raise LetheError("add_table: rows must be all dicts or all lists")
        if row_keys is not None and len(row_keys) != len(cells):
            raise LetheError(f"add_table: {len(row_keys)} row_keys for {len(cells)} rows")
        formatted = [[(format_value(value, row_keys[i] if row_keys is not None else c), _numeric(value))
                      for c, value in zip(columns, row, strict=True)] for i, row in enumerate(cells)]
        for j in range(len(columns)):  # "—" cells line up with the numbers of their column
            if any(row[j][1] for row in formatted):
                for row, raw in zip(formatted, cells, strict=True):
                    if raw[j] is None:
                        row[j] = (row[j][0], True)
        self.blocks.append(_Block("table", {"columns": [str(c) for c in columns], "rows": formatted,
                                            "caption": caption, "highlight": set(highlight)}))
        return self

    def add_keyvalues(self, values: Mapping[str, Any], caption: str | None = None) -> Report:
        """A two-column list of settings or results (formatted like table cells, key by key)."""
        items = [(str(k), format_value(v, k)) for k, v in values.items()]
        self.blocks.append(_Block("keyvalues", {"items": items, "caption": caption}))
        return self

    def add_figure(self, name: str, png_bytes: bytes, caption: str = "") -> Report:
        """A PNG figure, saved as ``figures/<name>.png`` and embedded in the HTML."""
        if not _NAME.match(str(name)):
            raise LetheError(f"add_figure: bad figure name {name!r} (letters, digits, '-', '_', '.')")
        if name in self.figures:
            raise LetheError(f"add_figure: a figure named {name!r} was already added")
        if not isinstance(png_bytes, bytes | bytearray) or not bytes(png_bytes).startswith(PNG_MAGIC):
            raise LetheError(f"add_figure: {name!r} is not PNG data")
        self.figures[name] = _Figure(str(name), bytes(png_bytes), str(caption))
        self.blocks.append(_Block("figure", {"name": name}))
        return self

    def add_generations(self, examples: Sequence[Mapping[str, Any]], caption: str | None = None) -> Report:
        """True vs generated continuations, token by token, the tokens that differ marked (``<mark>``).

        Each example: ``id``, ``target`` and ``generated`` (lists of token texts, compared position by
        position as the token match rate does: a missing generated token counts as a mismatch), and
        optionally ``prompt`` (the end of the prompt, shown before) and ``scores`` (a line of text).
        """
        rows = []
        for i, example in enumerate(examples):
            target, generated = example.get("target"), example.get("generated")
            if not all(isinstance(t, list | tuple) and all(isinstance(p, str) for p in t) for t in (target, generated)):
                raise LetheError(f"add_generations: example {i} needs 'target' and 'generated' lists of token texts")
            n = max(len(target), len(generated))
            same = [j < len(target) and j < len(generated) and target[j] == generated[j] for j in range(n)]
            rows.append({"id": str(example.get("id", i)), "scores": str(example.get("scores") or ""),
                         "prompt": str(example.get("prompt") or ""),
                         "target": [(p, same[j]) for j, p in enumerate(target)],
                         "generated": [(p, same[j]) for j, p in enumerate(generated)]})
        self.blocks.append(_Block("generations", {"rows": rows, "caption": caption}))
        return self

    def add_note(self, text: str, kind: str = "info") -> Report:
        """A highlighted box: ``info``, ``ok`` (e.g. "headline holds") or ``warning`` ("does not hold")."""
        if kind not in NOTE_KINDS:
            raise LetheError(f"add_note: kind must be one of {', '.join(NOTE_KINDS)}, got {kind!r}")
        self.blocks.append(_Block("note", {"text": str(text), "kind": kind}))
        return self

    # -- rendering ------------------------------------------------------------------------------------

    def _stamp(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.created)).strip()

    def to_markdown(self) -> str:
        """The Markdown text (figures as ``figures/<name>.png`` links)."""
        out = [f"# {self.title}", ""]
        if self.subtitle:
            out += [f"_{self.subtitle}_", ""]
        for block in self.blocks:
            d = block.data
            if block.kind == "heading":
                out += [f"## {d['text']}", ""]
            elif block.kind == "paragraph":
                out += [d["text"], ""]
            elif block.kind == "note":
                out += [f"> **{NOTE_KINDS[d['kind']]}:** {d['text']}", ""]
            elif block.kind == "keyvalues":
                if d["caption"]:
                    out += [f"**{d['caption']}**", ""]
                out += [f"- **{_md_cell(k)}**: {_md_cell(v)}" for k, v in d["items"]] + [""]
            elif block.kind == "table":
                if d["caption"]:
                    out += [f"**{d['caption']}**", ""]
                out.append("| " + " | ".join(_md_cell(c) for c in d["columns"]) + " |")
                out.append("|" + "|".join("---:" if any(r[j][1] for r in d["rows"]) else "---"
                                          for j in range(len(d["columns"]))) + "|")
                for i, row in enumerate(d["rows"]):
                    texts = [_md_cell(t) for t, _ in row]
                    if i in d["highlight"] and texts:
                        texts[0] = f"**{texts[0]}** ◆"
                    out.append("| " + " | ".join(texts) + " |")
                out.append("")
            elif block.kind == "generations":
                if d["caption"]:
                    out += [f"**{d['caption']}**", ""]
                for row in d["rows"]:
                    out += [f"- `{row['id']}`{' — ' + row['scores'] if row['scores'] else ''}"]
                    if row["prompt"]:
                        out.append(f"  - prompt (end): …{_md_text(row['prompt'])}")
                    out.append(f"  - true: {_marked(row['target'], _md_text)}")
                    out.append(f"  - generated: {_marked(row['generated'], _md_text)}")
                out.append("")
            elif block.kind == "figure":
                fig = self.figures[d["name"]]
                out += [f"![{fig.caption or fig.name}](figures/{fig.name}.png)", ""]
                if fig.caption:
                    out += [f"_{fig.caption}_", ""]
        out += ["---", f"_generated by Lethe {_version()} on {self._stamp()}_", ""]
        return "\n".join(out)

    def to_html(self, run_dir: str | Path | None = None) -> str:
        """The self-contained HTML page (``run_dir`` is only shown in the header)."""
        body: list[str] = []
        open_grid = False
        for block in self.blocks:
            if block.kind == "figure" and not open_grid:
                body.append('<div class="figures">')
                open_grid = True
            elif block.kind != "figure" and open_grid:
                body.append("</div>")
                open_grid = False
            body.append(self._html_block(block))
        if open_grid:
            body.append("</div>")
        subtitle = f'<p class="subtitle">{_esc(self.subtitle)}</p>' if self.subtitle else ""
        where = f'<span>run <code>{_esc(Path(run_dir).resolve())}</code></span>' if run_dir else ""
        return _PAGE.format(
            title=_esc(self.title), subtitle=subtitle, css=_CSS, body="\n".join(body),
            stamp=_esc(self._stamp()), where=where, version=_esc(_version()))

    def _html_block(self, block: _Block) -> str:
        d = block.data
        if block.kind == "heading":
            return f"<h2>{_esc(d['text'])}</h2>"
        if block.kind == "paragraph":
            return f"<p>{_esc(d['text'])}</p>"
        if block.kind == "note":
            label = NOTE_KINDS[d["kind"]]
            return f'<div class="note {d["kind"]}"><strong>{label}:</strong> {_esc(d["text"])}</div>'
        if block.kind == "keyvalues":
            caption = f"<caption>{_esc(d['caption'])}</caption>" if d["caption"] else ""
            rows = "".join(f'<tr><th scope="row">{_esc(k)}</th><td>{_esc(v)}</td></tr>'
                           for k, v in d["items"])
            return f'<div class="scroll"><table class="kv">{caption}<tbody>{rows}</tbody></table></div>'
        if block.kind == "table":
            caption = f"<caption>{_esc(d['caption'])}</caption>" if d["caption"] else ""
            right = [any(row[j][1] for row in d["rows"]) for j in range(len(d["columns"]))]
            head = "".join(f'<th scope="col"{_NUM_CLASS if r else ""}>{_esc(c)}</th>'
                           for c, r in zip(d["columns"], right, strict=True))
            rows = []
            for i, row in enumerate(d["rows"]):
                cls = ' class="diff"' if i in d["highlight"] else ""
                cells = "".join(f'<td class="num">{_esc(t)}</td>' if num else f"<td>{_esc(t)}</td>"
                                for t, num in row)
                rows.append(f"<tr{cls}>{cells}</tr>")
            kind = "data wide" if len(d["columns"]) > WIDE_TABLE_COLUMNS else "data"
            return (f'<div class="scroll"><table class="{kind}">{caption}<thead><tr>{head}</tr></thead>'
                    f"<tbody>{''.join(rows)}</tbody></table></div>")
        if block.kind == "generations":
            caption = f"<caption>{_esc(d['caption'])}</caption>" if d["caption"] else ""
            rows = []
            for row in d["rows"]:
                head = f"<code>{_esc(row['id'])}</code>" + (f" · {_esc(row['scores'])}" if row["scores"] else "")
                prompt = f'<span class="prompt">…{_esc(row["prompt"])}</span>' if row["prompt"] else ""
                rows.append(f'<tr><th scope="rowgroup" colspan="2">{head}</th></tr>'
                            f'<tr><th scope="row">true</th><td class="gen">{prompt}{_marked(row["target"], _esc)}'
                            f'</td></tr><tr><th scope="row">generated</th><td class="gen">{prompt}'
                            f'{_marked(row["generated"], _esc)}</td></tr>')
            return (f'<div class="scroll"><table class="generations">{caption}<tbody>{"".join(rows)}</tbody>'
                    "</table></div>")
        if block.kind == "figure":
            fig = self.figures[d["name"]]
            data = base64.b64encode(fig.png).decode("ascii")
            caption = f"<figcaption>{_esc(fig.caption)}</figcaption>" if fig.caption else ""
            wide = ' class="wide"' if _aspect(fig.png) >= 2.0 else ""
            width, height = _png_size(fig.png)
            size = f' width="{width}" height="{height}"' if width and height else ""
            return (f'<figure id="fig-{_esc(fig.name)}"{wide}><img alt="{_esc(fig.caption or fig.name)}" '
                    f'src="data:image/png;base64,{data}"{size}>{caption}</figure>')
        raise AssertionError(block.kind)  # pragma: no cover

    def write(self, run_dir: str | Path) -> tuple[Path, Path]:
        """Write ``figures/<name>.png``, ``report.md`` and ``report.html`` into ``run_dir`` (atomically)."""
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise LetheError(f"report directory {run_dir} exists and is not a directory")
        for fig in self.figures.values():
            atomic_write_bytes(run_dir / "figures" / f"{fig.name}.png", fig.png)
        md_path = atomic_write_text(run_dir / "report.md", self.to_markdown())
        html_path = atomic_write_text(run_dir / "report.html", self.to_html(run_dir))
        return md_path, html_path


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Lethe</title>
<style>{css}</style>
</head>
<body>
<header class="top"><div class="wrap">
<span class="brand">Lethe</span>
<span class="meta"><span>{stamp}</span>{where}</span>
</div></header>
<main class="wrap">
<h1>{title}</h1>
{subtitle}
{body}
</main>
<footer class="wrap"><div class="foot">generated by Lethe {version} · {stamp}</div></footer>
</body>
</html>
"""

_CSS = """
:root { --fg: #1f2328; --muted: #57606a; --line: #d0d7de; --zebra: #f6f8fa; --accent: #0072b2; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: #fff; color: var(--fg); line-height: 1.55; font-size: 16px;
  font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif; }
.wrap { max-width: 1120px; margin: 0 auto; padding: 0 24px; }
header.top { background: #24292f; color: #f6f8fa; padding: 10px 0; }
header.top .wrap { display: flex; flex-wrap: wrap; gap: 4px 20px; align-items: baseline;
  justify-content: space-between; }
.brand { font-weight: 700; font-size: 18px; letter-spacing: 0.06em; }
.meta { display: flex; flex-wrap: wrap; gap: 4px 18px; font-size: 13px; color: #d0d7de; }
.meta code { color: #f6f8fa; background: rgba(255,255,255,0.08); }
h1 { font-size: 28px; margin: 28px 0 4px; line-height: 1.25; }
.subtitle { color: var(--muted); margin: 0 0 16px; font-size: 17px; }
h2 { font-size: 20px; margin: 32px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
p { margin: 10px 0; max-width: 80ch; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em;
  padding: 1px 4px; border-radius: 4px; background: var(--zebra); word-break: break-all; }
.scroll { overflow-x: auto; margin: 12px 0 18px; }
table { border-collapse: collapse; font-size: 14px; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0 8px; color: var(--fg); }
th, td { padding: 6px 12px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
/* headers may wrap (numbers never do): a table fits the page before it scrolls */
table.data thead th { background: #eaeef2; border-bottom: 2px solid #afb8c1; vertical-align: bottom; }
table.data tbody tr:nth-child(even) { background: var(--zebra); }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
table.wide { font-size: 12.5px; }  /* many columns: fit the page instead of scrolling */
table.wide th, table.wide td { padding: 5px 7px; }
tr.diff td { background: #fff8c5; }
tr.diff td:first-child { box-shadow: inset 4px 0 0 #d4a72c; font-weight: 600; }
table.kv th { font-weight: 600; color: var(--muted); white-space: nowrap; }
table.kv td { font-variant-numeric: tabular-nums; }
.note { margin: 14px 0; padding: 10px 14px; border-radius: 6px; border: 1px solid; border-left-width: 5px; }
.note.info { background: #ddf4ff; border-color: #54aeff; }
.note.ok { background: #dafbe1; border-color: #4ac26b; }
.note.warning { background: #fff1e5; border-color: #d1242f; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 480px), 1fr));
  gap: 18px; margin: 14px 0 22px; }
figure { margin: 0; padding: 10px; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
figure.wide { grid-column: 1 / -1; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }  /* never upscaled (blurry) */
figcaption { font-size: 13.5px; color: var(--muted); margin-top: 6px; }
table.generations { font-size: 14px; width: 100%; }
table.generations th[scope="rowgroup"] { background: #eaeef2; font-weight: 600; padding-top: 8px; }
table.generations th[scope="row"] { color: var(--muted); font-weight: 600; white-space: nowrap; width: 1%; }
td.gen { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px;
  white-space: pre-wrap; word-break: break-word; }
td.gen .prompt { color: #8c959f; }
td.gen mark { background: #ffd8b5; color: #7d2a00; border-radius: 2px; text-decoration: underline dotted; }
footer { color: var(--muted); font-size: 13px; margin-top: 40px; padding-bottom: 28px; }
footer .foot { border-top: 1px solid var(--line); padding-top: 12px; }
"""
