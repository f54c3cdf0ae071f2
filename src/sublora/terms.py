"""The glossary's words in a page's markdown (book/glossary.md): a word linked to its glossary term at its first use
on the page. The computed pages are written with it: the landing page (sublora.pages) and the organism page
(sublora.search_record).
"""
from __future__ import annotations

import re

# What a word is never linked inside: a fenced code block, a MyST role ({term}`...`, {doc}`...`), a code span
KEPT = re.compile(r"```.*?```|\{[a-z]+\}`[^`]*`|`[^`\n]*`", re.DOTALL)


def link_first(markdown: str, words: str, term: str) -> str:
    """`markdown` with the first use of `words` (a whole word, not in code nor inside a role already) linked to the
    glossary's `term`."""
    parts, done = re.split(f"({KEPT.pattern})", markdown, flags=re.DOTALL), False
    role = f"{{term}}`{words}`" if words == term else f"{{term}}`{words} <{term}>`"
    for i, part in enumerate(parts):
        if done or KEPT.fullmatch(part):
            continue
        linked = re.sub(rf"(?<![\w-]){re.escape(words)}(?![\w-])", lambda _: role, part, count=1)
        done, parts[i] = linked != part, linked
    return "".join(parts)


def link_each(markdown: str, terms) -> str:
    """`markdown` with each (words, term) of `terms` linked at its first use (link_first)."""
    for words, term in terms:
        markdown = link_first(markdown, words, term)
    return markdown
