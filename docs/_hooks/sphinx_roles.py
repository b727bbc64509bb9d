"""MkDocs hook: shows the Sphinx roles of vseg's docstrings as plain code in the API reference.

The docstrings cross-reference with Sphinx roles (:class:`X`, :func:`~a.b.c`), which Markdown renders
as the role's name followed by code. This hook drops the role and, for the ``~`` form, keeps only the
last dotted name, as Sphinx shows it.
"""

import re

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):<code>(~?)([^<]*)</code>")


def _code(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs) -> str:
    return _ROLE.sub(_code, html)
