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


def test_the_layout_in_docs_names_every_module():
    """docs/internals.md's tree is where a maintainer looks for a module's home."""
    block = (ROOT / "docs" / "internals.md").read_text().split("```\nappliance/\n", 1)[1].split("```", 1)[0]
    entries: dict[str, str] = {}
    for line in block.splitlines():
        if m := re.match(r"  (\S+)\s*(.*)", line):  # an entry: a module, or a package and its modules
            key, entries[m.group(1)] = m.group(1), m.group(2)
        else:
            entries[key] += " " + line.strip()
    missing = []
    for path in sorted((ROOT / "appliance").rglob("*.py")):
        parts = path.relative_to(ROOT / "appliance").parts
        if parts[-1] in ("__init__.py", "__main__.py"):
            continue
        if len(parts) == 1 and parts[0] not in entries or len(parts) > 1 and not re.search(
                rf"\b{re.escape(parts[-1])}\b", entries.get(parts[0] + "/", "")):
            missing.append("/".join(parts))
    assert missing == [], f"docs/internals.md's layout omits {missing}"
