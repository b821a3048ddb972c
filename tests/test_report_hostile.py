"""Everything records, profiles and services say reaches the page as text; an interrupted report
leaves the previous one whole."""

import re
from html.parser import HTMLParser

import pytest

from scoring_lib.records import save_record
from scoring_lib.report import build_report
from scoring_lib.service import Known, ServiceProfile
from test_report import record

SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'
PIPE = "a | b\nnext line"
MARKDOWN = "[link](javascript:alert(5)) **bold** `tick`"


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.handlers, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.handlers += [name for name, _ in attrs if name.lower().startswith("on")]

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture
def hostile_runs(tmp_path):
    runs = tmp_path / "runs"
    for i, s in enumerate([2.2, 2.3]):
        rec = record(i, "asyncio", s, 200, "auto", 1)
        rec["extra"]["point_id"] = f"p<b onmouseover=alert(3)>{i}"
        save_record(rec, runs)
    for i, text in enumerate([SCRIPT, IMG, PIPE, MARKDOWN]):
        failed = record(10 + i, "asyncio", None, 100, 100, 1) | {"status": "failed", "failure": text}
        save_record(failed, runs)
    return runs


def test_hostile_records_and_profile_are_text_in_the_html_page(hostile_runs, tmp_path):
    profile = ServiceProfile(url="http://h/<script>alert(4)</script>", name=f"name{IMG}",
                             latency=Known(4.15, "probed"), capacity=Known(200, "probed"))
    report = build_report(hostile_runs, tmp_path / "report", profile=profile)
    html = report.html.read_text()
    parsed = Tags()
    parsed.feed(html)
    assert "script" not in parsed.tags
    assert parsed.handlers == []
    text = "".join(parsed.text)
    for said in (SCRIPT, IMG, "p<b onmouseover=alert(3)>0", f"name{IMG}"):
        assert said in text, said
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # Only the figures are images, each an embedded PNG.
    assert html.count("<img ") == len(report.figures)


def test_hostile_records_stay_inside_their_markdown_cells(hostile_runs, tmp_path):
    profile = ServiceProfile(url="http://h/", name=f"name{IMG}", latency=Known(4.15, "probed"),
                             capacity=Known(200, "probed"))
    page = build_report(hostile_runs, tmp_path / "report", profile=profile).page.read_text()
    outside_code = re.sub(r"`[^`]*`", "", page)  # a code span shows its text as is
    assert SCRIPT not in outside_code and "<img" not in outside_code and "<b " not in outside_code
    assert "name&lt;img" in page
    failed = page.split("## Failed runs")[1].split("Tidy tables")[0].strip().splitlines()
    assert len(failed) == 2 + 4  # header, rule, one row per failed run: the newline and the pipe stayed inside
    assert all(line.count(" | ") == 1 for line in failed[2:])
    assert "&lt;script&gt;" in page and "a \\| b next line" in page
    # a service's Markdown stays characters: no live link, no bold, no code span of its choosing
    assert "\\[link\\](javascript:alert(5)) \\*\\*bold\\*\\* \\`tick\\`" in page
    assert "](javascript" not in page.replace("\\](javascript", "")


def test_an_interrupted_report_leaves_the_previous_one_whole(hostile_runs, tmp_path, monkeypatch):
    from scoring_lib import plots

    out = tmp_path / "report"
    build_report(hostile_runs, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    save_record(record(30, "asyncio", 2.9, 400, "auto", 1), hostile_runs)  # new data: new tables and figures
    monkeypatch.setattr(plots, "efficiency", interrupted)  # the third figure: two new ones are drawn by then
    with pytest.raises(KeyboardInterrupt):
        build_report(hostile_runs, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "runs"]  # no half-written folder left
