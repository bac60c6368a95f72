"""The manual's links: every relative link of the project's markdown points at a file in the
repository and, with an anchor, at a heading of that file (as GitHub names headings)."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ("README.md", "benchmarks/README.md", "benchmarks/results/findings.md",
        "benchmarks/results/performance.md", "benchmarks/results/amazon-beauty/report.md",
        "benchmarks/results/amazon-sports-outdoors/report.md")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    """The slugs of a markdown file's headings; ``#`` lines inside fenced code are not headings."""
    found, fenced = set(), False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("```"):
                fenced = not fenced
            elif line.startswith("#") and not fenced:
                found.add(slug(line.lstrip("#")))
    return found


def test_anchors_skip_comments_in_fenced_code(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# Install\n```bash\n# not a heading\n```\n## Run it\n")
    assert anchors(doc) == {"install", "run-it"}


def test_slug_matches_githubs_rule():
    assert slug(" Variants beyond the paper against plain RSIR") == "variants-beyond-the-paper-against-plain-rsir"
    assert slug("tau x p sweep") == "tau-x-p-sweep" and slug("Use it in your own RecBole script") == \
        "use-it-in-your-own-recbole-script"


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_reach_a_file_and_its_heading(doc):
    path = os.path.join(ROOT, doc)
    with open(path, encoding="utf-8") as f:
        targets = LINK.findall(f.read())
    broken = []
    for target in targets:
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        if not os.path.exists(resolved) or (anchor and resolved.endswith(".md") and anchor not in anchors(resolved)):
            broken.append(target)
    assert targets and not broken
