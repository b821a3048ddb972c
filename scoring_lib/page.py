"""The report page: report.md and a self-contained report.html rendered by Jinja2 templates with
autoescape on, so everything records, profiles and services say is text; and a report folder
replaced whole, so an interrupted report leaves the previous one as it was."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup, escape

MISSING = "\u2014"  # an em dash: what every table of the report prints where a figure does not exist
# counts, never 2e+03
WHOLE = ("final_limit", "max_concurrent_tasks", "service_capacity", "runs", "cpu_count", "rate_cuts")

# Tables sit in a box that scrolls sideways when a table is wider than the page (the page itself never
# does); a first column (a setting's id) never breaks inside, headers break after their underscores.
HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}
.table{overflow-x:auto;margin:1em 0}table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 5px}th{background:#f3f3f3;vertical-align:bottom}td.num{text-align:right}
td:first-child{white-space:nowrap}img{max-width:100%}code{background:#f5f5f5;padding:0 3px}"""


_TAG = re.compile(r"<[A-Za-z/!?][^<>]*>?")  # what Markdown would take for raw HTML
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")  # an & that Markdown would read as a character reference


def md_escape(text: str) -> str:
    """Raw HTML and character references made text; `->`, `>=` and `a < b` stay as they read (an entity
    for every `>` shows as `&gt;` to whoever reads the .md itself)."""
    out = _ENTITY.sub("&amp;", str(text))
    return _TAG.sub(lambda m: m.group(0).replace("<", "&lt;").replace(">", "&gt;"), out)


_INLINE_MD = re.compile(r"([\\`*\[\]])")  # what makes a link, an image, a code span or emphasis of a cell's text


def md_cell(text: str) -> str:
    """A string as one Markdown table cell, shown as the text it is: no pipe, newline or raw HTML can leave
    the cell, and a service's `[link](javascript:...)`, `**bold**` or backticks stay characters."""
    text = _INLINE_MD.sub(r"\\\1", md_escape(text))
    return re.sub(r"\s*[\r\n]+\s*", " ", text).replace("|", "\\|")


def md_text(text: str) -> str:
    """Prose for report.md: raw HTML escaped outside `code spans` (inside them Markdown shows it as is)."""
    parts = re.split(r"(`[^`]*`)", str(text))
    return "".join(p if p.startswith("`") and p.endswith("`") and len(p) > 1 else md_escape(p) for p in parts)


@dataclass
class Table:
    """One table, formatted once: Markdown for report.md, cells (text) for the HTML template."""

    columns: list
    rows: list
    numeric: list
    markdown: str

    @property
    def empty(self) -> bool:
        return not self.rows


def _format(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return format(value, fmt)


def make_table(df: pd.DataFrame, floatfmt: str = ".3g") -> Table:
    """A table whose missing figures (None, NaN) are em dashes, never `nan`, and counts whole."""
    if df.empty:
        return Table(list(df.columns), [], [], "_(none)_")
    formats = [".0f" if col in WHOLE else floatfmt for col in df.columns]
    cells = df.astype(object).where(df.notna(), None)
    texts = cells.map(lambda v: md_cell(v) if isinstance(v, str) else v)
    texts = texts.astype(object).where(texts.notna(), None)  # map may bring NaN back
    markdown = texts.to_markdown(index=False, floatfmt=formats, missingval=MISSING)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    rows = [[_format(v, f) for v, f in zip(row, formats)] for row in cells.itertuples(index=False)]
    return Table([str(c) for c in df.columns], rows, numeric, markdown)


_INLINE = [(re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"), (re.compile(r"`([^`]+?)`"), r"<code>\1</code>"),
           (re.compile(r"(?<![\w*])\*(\S[^*]*?)\*(?![\w*])"), r"<em>\1</em>")]


def inline(text: str) -> Markup:
    """The report's inline Markdown (bold, code, emphasis) as HTML: the text is escaped first, so the
    only tags in the result are these three."""
    out = str(escape(text))
    for pattern, html in _INLINE:
        out = pattern.sub(html, out)
    return Markup(out)


def wbr(text: str) -> Markup:
    """A column header that may break after its underscores."""
    return Markup(str(escape(text)).replace("_", "_<wbr>"))


TEMPLATES = Path(__file__).resolve().parent / "templates"


def _environment(autoescape: bool) -> jinja2.Environment:
    # The folder beside this file, not PackageLoader: that one looks the package up again on sys.path,
    # where a folder named scoring_lib in the current directory can stand in front of the real one.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=autoescape,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["inline"] = inline
    env.filters["md"] = md_text
    env.filters["wbr"] = wbr
    return env


def render(context: dict, figures: dict[str, Path], captions: dict[str, str]) -> tuple[str, str]:
    """(report.md, report.html) from one context; the HTML embeds its figures."""
    figs = [{"name": name, "file": Path(path).name, "caption": captions.get(name, ""),
             "data_uri": "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")}
            for name, path in figures.items()]
    ctx = dict(context, figures=figs, style=Markup(HTML_STYLE))
    markdown = _environment(False).get_template("report.md.j2").render(ctx)
    html = _environment(True).get_template("report.html.j2").render(ctx)
    return markdown, html


@contextmanager
def _signals_held():
    """Ctrl-C and SIGTERM wait until the block is done (main thread only; elsewhere a no-op)."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError, OSError):
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextmanager
def replaced_whole(out: Path):
    """A fresh folder to write the report into; on success it takes `out`'s place in two renames,
    done with signals held, and the old folder goes. On any failure or interrupt `out` stays as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        yield new
        os.chmod(new, 0o755)
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        with _signals_held():
            moved = out.exists()
            if moved:
                os.rename(out, old)
            try:
                os.rename(new, out)
            except OSError:
                if moved:
                    os.rename(old, out)
                raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(new, ignore_errors=True)
