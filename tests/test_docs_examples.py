"""Every configuration example in README.md and docs/ is loaded as users would load
it: as a site file over the defaults. A test fails when one stops parsing."""

from __future__ import annotations

import re
import tomllib

import pytest

from appliance.config import validate
from conftest import ROOT

FENCE = re.compile(r"^```toml\n(.*?)^```", re.M | re.S)


def examples() -> list[tuple[str, str]]:
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append((f"{doc.relative_to(ROOT)}:{line}", m.group(1)))
    return found


def test_the_docs_have_configuration_examples():
    assert len(examples()) >= 5, "the fence pattern no longer finds README's examples"


@pytest.mark.parametrize("where, body", examples(), ids=[w for w, _ in examples()])
def test_configuration_example_loads(where, body):
    data = tomllib.loads(body)
    validate([(where, data)])


def test_readme_is_short_and_its_links_lead_somewhere():
    """For its two readers, in five minutes: the reference lives in docs/."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which is not there"
