"""The documentation that is generated from code stays in step with it."""

from __future__ import annotations

from cascade.configdoc import BEGIN, END, render
from tests.conftest import ROOT


def test_config_reference_lists_every_key_as_the_code_defines_it() -> None:
    doc = (ROOT / "docs/config.md").read_text()
    generated = doc[doc.index(BEGIN) : doc.index(END) + len(END)]
    assert generated == render(), "docs/config.md is stale: run `python -m cascade.configdoc` and paste its output"
