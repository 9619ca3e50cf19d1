"""Docs stay in step with the code: every public name and every estimator is documented."""

import re
from pathlib import Path

import stepcredit as sc

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_public_name_is_in_the_api_doc():
    text = (DOCS / "api.md").read_text()
    missing = [name for name in sc.__all__ if f"`{name}" not in text]
    assert missing == []


def test_every_estimator_is_in_the_estimators_doc_and_readme():
    text = (DOCS / "estimators.md").read_text()
    readme = (DOCS.parent / "README.md").read_text()
    names = [s.name for s in sc.list_estimators()]
    assert [n for n in names if f"### `{n}`" not in text] == []
    assert [n for n in names if f"`{n}`" not in readme] == []


def test_every_estimator_parameter_is_in_the_estimators_doc():
    text = (DOCS / "estimators.md").read_text()
    missing = [
        f"{s.name}.{p}" for s in sc.list_estimators() for p in s.params if f"`{p}`" not in text
    ]
    assert missing == []


def test_every_estimator_docstring_cites_its_paper():
    for spec in sc.list_estimators():
        doc = spec.fn.__doc__ or ""
        assert "Reference:" in doc, spec.name
        assert "Differs from official code:" in doc, spec.name
        # Title (Authors, Year, arXiv:XXXX.XXXXX), or a venue for papers that predate arXiv
        assert re.fullmatch(r".+ \(.+, (19|20)\d\d, (arXiv:\d{4}\.\d{4,5}|[A-Z][A-Za-z]+)\)", spec.paper), spec.name


def _stages():
    return [("transform", s) for s in sc.list_transforms()] + [("filter", s) for s in sc.list_filters()]


def test_every_transform_and_filter_is_in_the_shaping_doc_with_its_parameters():
    text = (DOCS / "shaping.md").read_text()
    missing = [s.name for _, s in _stages() if f"### `{s.name}`" not in text]
    assert missing == []
    missing_params = [f"{s.name}.{p}" for _, s in _stages() for p in s.params if f"`{p}`" not in text]
    assert missing_params == []


def test_every_transform_and_filter_docstring_cites_its_paper():
    for kind, spec in _stages():
        doc = spec.fn.__doc__ or ""
        assert "Reference:" in doc, (kind, spec.name)
        assert "Differs from official code:" in doc, (kind, spec.name)
        assert re.fullmatch(r".+ \(.+, (19|20)\d\d, (arXiv:\d{4}\.\d{4,5}|[A-Z][A-Za-z]+)\)", spec.paper), spec.name


def test_readme_lists_every_transform_and_filter():
    readme = (DOCS.parent / "README.md").read_text()
    assert [s.name for _, s in _stages() if f"`{s.name}`" not in readme] == []
