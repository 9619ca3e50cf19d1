"""`stepcredit report`'s HTML: structure, escaping, the credit view, and a headless-Chromium render.

The Chromium test needs Debian's ``chromium`` package (``apt-get install -y chromium``); where
the binary is absent it is skipped with that reason.
"""

from __future__ import annotations

import base64
import dataclasses
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepcredit.bench.matrix import BenchConfig, BenchResult, method_name, run_bench
from stepcredit.bench.report import NEGATIVE, POSITIVE, credit_colour, credit_view, write_report

# the bench of tests/test_bench.py: lock_chain of length 2, grpo vs gigpo, 2 seeds, 96 episodes
from test_bench import SMALL

CHROMIUM_INSTALL = "apt-get install -y chromium"


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[BenchResult, Path, str]:
    out = tmp_path_factory.mktemp("bench")
    result = run_bench(SMALL, out)
    path = write_report(result, out)
    return result, out, path.read_text(encoding="utf-8")


class Page(HTMLParser):
    """The parts of the report the tests look at."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.tables: dict[str, list[list[tuple[str, dict[str, str]]]]] = {}  # class -> rows of (text, attrs) cells
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._cell_attrs: dict[str, str] = {}
        self._row: list[tuple[str, dict[str, str]]] | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "table":
            self._table = a.get("class", "")
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self.tables[self._table].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell, self._cell_attrs = [], {**a, "tag": tag}

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(("".join(self._cell), self._cell_attrs))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> Page:
    p = Page()
    p.feed(text)
    p.close()
    return p


def credit_blocks(page: Page) -> dict[str, list[list[tuple[str, dict[str, str]]]]]:
    """Credit table rows grouped under their method header row: method -> episode rows."""
    blocks: dict[str, list] = {}
    current = None
    for row in page.tables["credit"]:
        if len(row) == 1 and "colspan" in row[0][1] and "ep" not in row[0][1].get("class", ""):
            current = row[0][0]
            blocks[current] = []
        else:
            blocks[current].append(row)
    return blocks


def background(attrs: dict[str, str]) -> str:
    style = attrs.get("style", "")
    assert style.startswith("background:#"), style
    return style.split(":", 1)[1]


# ---------------------------------------------------------------------- colours
def test_credit_colour_by_hand():
    # zero is white; ±scale and beyond are the scale's ends; half-way is the mean of white and
    # the end: at -scale/2, (255 + 215)/2 = 235 = eb, (255 + 48)/2 = 151.5 -> 152 = 98,
    # (255 + 39)/2 = 147 = 93
    assert credit_colour(0.0, 1.0) == "#ffffff"
    assert credit_colour(2.0, 2.0) == "#{:02x}{:02x}{:02x}".format(*POSITIVE)
    assert credit_colour(-5.0, 2.0) == "#{:02x}{:02x}{:02x}".format(*NEGATIVE)
    assert credit_colour(-0.5, 1.0) == "#eb9893"
    assert credit_colour(float("nan"), 1.0) == "#bbbbbb"


@given(st.floats(-10, 10, allow_nan=False), st.floats(1e-3, 10))
def test_credit_colour_hue_follows_the_sign_and_fades_to_white(a, scale):
    rgb = [int(credit_colour(a, scale)[k:k + 2], 16) for k in (1, 3, 5)]
    if a > 0:
        assert rgb[1] >= rgb[0]  # green over red
    elif a < 0:
        assert rgb[0] >= rgb[1]
    closer = [int(credit_colour(a / 2, scale)[k:k + 2], 16) for k in (1, 3, 5)]
    assert sum(255 - c for c in closer) <= sum(255 - c for c in rgb)  # smaller |A|: nearer white


# ---------------------------------------------------------------------- structure
def test_results_table_has_one_row_per_cell_with_censored_cells_marked(bench):
    result, _, text = bench
    rows = parse(text).tables["results"]
    assert [c for c, _ in rows[0]] == list(BenchResult.HEADER)
    body = rows[1:]
    assert len(body) == len(result.cells)
    for cell, row, want in zip(result.cells, body, result.rows()):
        assert [c for c, _ in row] == want
        censored = "censored" in row[2][1].get("class", "")
        assert censored == cell.episodes_to_target.censored
    assert any(c.episodes_to_target.censored for c in result.cells)  # the small bench never reaches 80%


def test_plots_are_embedded_png_data_and_nothing_is_fetched(bench):
    result, out, text = bench
    page = parse(text)
    imgs = [a for t, a in page.tags if t == "img"]
    assert len(imgs) == len(result.config.envs)
    for a in imgs:
        prefix = "data:image/png;base64,"
        assert a["src"].startswith(prefix)
        data = base64.b64decode(a["src"][len(prefix):], validate=True)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert data == (out / "curves_lock_chain.png").read_bytes()
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object")]
    for _, a in page.tags:
        for k in ("src", "href"):
            assert not a.get(k, "data:").split(":", 1)[0] in ("http", "https", "file", ""), a


def test_credit_view_colours_every_step_per_method(bench):
    result, out, text = bench
    blocks = credit_blocks(parse(text))
    assert list(blocks) == [method_name(m) for m in result.config.methods]
    view = credit_view(result, out, "lock_chain")
    lengths = [len(a) for a in view.actions]
    assert len(lengths) == SMALL.group_size and len(set(view.outcome)) > 1  # a group with differing outcomes
    for method, rows in blocks.items():
        assert [len(r) - 1 for r in rows] == lengths  # a label cell, then one cell per step
        for i, row in enumerate(rows):
            assert [c for c, _ in row[1:]] == list(view.actions[i])
            assert all("state: " in a["title"] and "advantage: " in a["title"] for _, a in row[1:])
    # GRPO gives every step of an episode its episode's advantage: one colour per row
    assert all(len({background(a) for _, a in row[1:]}) == 1 for row in blocks["grpo"])
    # GiGPO's anchor-state term tells the steps of an episode apart
    assert any(len({background(a) for _, a in row[1:]}) > 1 for row in blocks["gigpo"])
    # the colours are the advantages on the shared scale
    gigpo = next(mc for mc in view.credits if mc.method == "gigpo")
    for row, adv in zip(blocks["gigpo"], gigpo.advantage):
        assert [background(a) for _, a in row[1:]] == [credit_colour(float(x), view.scale) for x in adv]
    assert view.scale == pytest.approx(max(float(np.abs(a).max()) for mc in view.credits for a in mc.advantage))


def test_credit_view_without_a_checkpoint_uses_the_initial_policy(bench, tmp_path):
    result, _, _ = bench
    view = credit_view(result, tmp_path, "lock_chain", episodes=2)
    assert view.source == "the initial (uniform) policy" and len(view.episode_ids) == 2


def test_the_report_is_deterministic(bench, tmp_path):
    result, out, text = bench
    assert write_report(result, out).read_text(encoding="utf-8") == text
    assert not list(out.glob(".report.html.*"))  # the temporary file was renamed


def test_every_text_is_escaped(bench, tmp_path):
    result, out, _ = bench
    evil = "<script>alert(1)</script>"
    img = '<img src=x onerror="alert(2)">'
    cfg = dataclasses.replace(
        result.config,
        env_kwargs={"lock_chain": {"length": 2, "note": evil}},
        methods=("grpo", f"pipes/{img}.toml"),
    )
    cells = (result.cells[0], dataclasses.replace(result.cells[1], method=f"pipes/{img}.toml"))
    bad = dataclasses.replace(result, config=cfg, cells=cells)
    for name in ("curves_lock_chain.png",):
        shutil.copy(out / name, tmp_path / name)
    page = parse(write_report(bad, tmp_path).read_text(encoding="utf-8"))
    assert [t for t, _ in page.tags if t == "script"] == []
    assert all("onerror" not in a for _, a in page.tags)
    assert sum(t == "img" for t, _ in page.tags) == 1  # the plot only
    words = "".join(page.text)
    assert evil in words and img in words  # shown as text
    assert "no credit view: environment 'lock_chain'" in words  # the bad parameter, reported in the page


# ---------------------------------------------------------------------- headless Chromium
def test_the_report_renders_in_headless_chromium(bench, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip(f"headless Chromium is not installed; install it with `{CHROMIUM_INSTALL}` (Debian)")
    from matplotlib import image

    _, out, _ = bench
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1200,2000", (out / "report.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    px = image.imread(str(shot))[..., :3]  # float RGB in [0, 1]
    assert px.shape[:2] == (2000, 1200)
    rgb = np.round(px * 255).astype(int)
    non_white = np.any(rgb < 245, axis=-1).mean()
    assert non_white > 0.03, f"the screenshot is almost blank ({non_white:.1%} non-white pixels)"

    def near(colour, tol=12):
        return int(np.all(np.abs(rgb - np.array(colour)) <= tol, axis=-1).sum())

    assert near((31, 119, 180)) > 50, "no learning-curve line (matplotlib's first colour) rendered"
    assert near((0xFF, 0xF4, 0xD6), tol=3) > 500, "the results table's censored cells did not render"
    assert near(POSITIVE, tol=30) > 200 and near(NEGATIVE, tol=60) > 200, "the credit view's colours did not render"


@pytest.mark.parametrize("policy", ["mlp", "lm"])
def test_credit_view_loads_the_trained_policy_of_its_kind(policy, tmp_path):
    # the checkpoint of a torch or language-model run is read back into a policy of the run's
    # kind (a tabular policy cannot read it), and the view's episodes come from that policy
    pytest.importorskip("torch")
    if policy == "lm":
        pytest.importorskip("transformers")
    cfg = BenchConfig(envs=("lock_chain",), env_kwargs={"lock_chain": {"length": 3}}, methods=("grpo",),
                      seeds=1, budget=128, policy=policy)
    result = run_bench(cfg, tmp_path)
    view = credit_view(result, tmp_path, "lock_chain", episodes=2)
    assert view.source.startswith("the final policy of grpo") or "initial policy" in (view.note or "")
    assert len(view.episode_ids) == 2
    page = write_report(result, tmp_path).read_text(encoding="utf-8")
    assert "missing array" not in page and "no credit view" not in page
