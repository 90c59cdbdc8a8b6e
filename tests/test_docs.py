"""The README is a newcomer's page and docs/ holds the rest: the README keeps its size promise, no page carries
history (commit ids, issue numbers, dates: git has them), every relative link resolves to a file of the
repository, and the README's test command is the one CI runs."""
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
README_LIMIT = 15_000                                   # bytes
PAGES = [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
CARDS = sorted(glob.glob(os.path.join(ROOT, "pretrained", "*", "README.md")))
TEST_COMMAND = "pip install -r requirements.txt -r tests/requirements.txt && python -m pytest -q tests"

HISTORY = {
    "a commit id": re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b"),
    "an issue number": re.compile(r"\b(?:issues?|PR|pull request)\s+#?\d+|(?<![\w&/])#\d+\b", re.I),
    "a date": re.compile(r"\b\d{4}-\d{2}-\d{2}\b"),
}
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def rel(path):
    return os.path.relpath(path, ROOT)


def test_readme_keeps_its_size_promise():
    size = os.path.getsize(README)
    assert size <= README_LIMIT, f"README.md is {size:,} bytes; at most {README_LIMIT:,}: move detail to docs/"


@pytest.mark.parametrize("path", PAGES, ids=rel)
def test_pages_carry_no_history(path):
    text = open(path, encoding="utf-8").read()
    found = [f"{what}: {m.group(0)!r} (line {text.count(chr(10), 0, m.start()) + 1})"
             for what, pattern in HISTORY.items() for m in pattern.finditer(text)]
    assert not found, f"{rel(path)} quotes history that git keeps: {found}"


@pytest.mark.parametrize("path", PAGES + CARDS, ids=rel)
def test_relative_links_resolve(path):
    text = open(path, encoding="utf-8").read()
    missing = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue                                      # a URL (http:, mailto:) or an anchor on the same page
        file = os.path.normpath(os.path.join(os.path.dirname(path), target.split("#")[0]))
        if not os.path.exists(file) or not file.startswith(ROOT + os.sep):
            missing.append(target)
    assert not missing, f"{rel(path)} links to files that are not in the repository: {missing}"


def test_readme_gives_the_test_command_that_ci_runs():
    readme = open(README, encoding="utf-8").read()
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert TEST_COMMAND in readme.splitlines() or f"    {TEST_COMMAND}" in readme.splitlines()
    assert ci.rstrip().splitlines()[-1] == TEST_COMMAND


def test_docs_pages_are_linked_from_the_readme():
    readme = open(README, encoding="utf-8").read()
    unlinked = [rel(p) for p in PAGES[1:] if f"]({rel(p)})" not in readme]
    assert not unlinked, f"README.md's table of docs does not link {unlinked}"
