"""Markdown from the model -> the small HTML dialect Telegram accepts.

Telegram's HTML knows b/i/s/u/code/pre/a/blockquote and nothing else, so headings become bold,
lists become bullet lines, and every piece of the model's own text (including any raw HTML it
wrote) is escaped: the model can format, never inject markup.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token

from bots.channel import utf16_len

_md = MarkdownIt("commonmark", {"html": True}).enable("strikethrough")

_SAFE_SCHEMES = {"http", "https", "tg", "mailto"}
_INLINE_TAGS = {"strong": "b", "em": "i", "s": "s"}
_LANG = re.compile(r"[^A-Za-z0-9_+#.-]")
_TAG = re.compile(r"<[^>]*>")


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _safe_href(href: str) -> str | None:
    try:
        scheme = urlsplit(href).scheme.lower()
    except ValueError:
        return None
    return href if scheme in _SAFE_SCHEMES else None


def _inline(children: list[Token]) -> str:
    out: list[str] = []
    links: list[bool] = []
    for tok in children:
        kind = tok.type
        if kind in ("text", "html_inline"):
            out.append(_esc(tok.content))
        elif kind in ("softbreak", "hardbreak"):
            out.append("\n")
        elif kind == "code_inline":
            out.append(f"<code>{_esc(tok.content)}</code>")
        elif kind.endswith("_open") and kind[:-5] in _INLINE_TAGS:
            out.append(f"<{_INLINE_TAGS[kind[:-5]]}>")
        elif kind.endswith("_close") and kind[:-6] in _INLINE_TAGS:
            out.append(f"</{_INLINE_TAGS[kind[:-6]]}>")
        elif kind == "link_open":
            href = _safe_href(str(tok.attrs.get("href", "")))
            links.append(href is not None)
            if href is not None:
                out.append(f'<a href="{html.escape(href, quote=True)}">')
        elif kind == "link_close":
            if links and links.pop():
                out.append("</a>")
        elif kind == "image":
            out.append(_esc(tok.content))
        else:
            out.append(_esc(tok.content))
    return "".join(out)


class _Writer:
    """Accumulates output and knows how blocks are separated at the current depth."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.lists: list[list[int | None]] = []  # per open list: [next number or None for bullets]
        self.quotes = 0
        self.fresh_item = False  # a list marker was just written: its first block follows inline

    def text(self) -> str:
        return "".join(self.parts)

    def block(self) -> None:
        """Start a new block: a blank line between top-level blocks, a newline inside lists/quotes."""
        if self.fresh_item:
            self.fresh_item = False
            return
        current = self.text()
        if not current or current.endswith(("<blockquote>", "\n")):
            return
        want = "\n" if (self.lists or self.quotes) else "\n\n"
        stripped = current.rstrip("\n")
        self.parts = [stripped, want]

    def trim(self) -> None:
        self.parts = [self.text().rstrip("\n")]


def markdown_to_telegram_html(text: str) -> str:
    """Render Markdown as Telegram HTML; the result's visible text is never longer than the input
    (replies are split by the input's length): where markup would add characters, as empty nested
    list items do, the text is sent as it was written."""
    rendered = _render(text)
    if utf16_len(_visible(rendered)) > utf16_len(text):
        return _esc(text)
    return rendered


def _visible(rendered: str) -> str:
    """What Telegram shows of our HTML (every literal '<' in it is escaped, so tags are ours)."""
    return html.unescape(_TAG.sub("", rendered))


def _render(text: str) -> str:
    w = _Writer()
    for tok in _md.parse(text):
        kind = tok.type
        if kind == "paragraph_open":
            if not tok.hidden:
                w.block()
        elif kind == "inline":
            w.fresh_item = False
            w.parts.append(_inline(tok.children or []))
        elif kind == "heading_open":
            w.block()
            w.parts.append("<b>")
        elif kind == "heading_close":
            while w.parts and not w.parts[-1]:
                w.parts.pop()
            if w.parts and w.parts[-1] == "<b>":  # an empty heading ("#") shows nothing
                w.parts.pop()
            else:
                w.parts.append("</b>")
        elif kind in ("bullet_list_open", "ordered_list_open"):
            w.block()
            start = int(tok.attrs.get("start", 1)) if kind == "ordered_list_open" else None
            w.lists.append([start])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            w.lists.pop()
        elif kind == "list_item_open":
            w.block()
            current = w.lists[-1]
            indent = "  " * (len(w.lists) - 1)
            if current[0] is None:
                w.parts.append(f"{indent}• ")
            else:
                w.parts.append(f"{indent}{current[0]}. ")
                current[0] += 1
            w.fresh_item = True
        elif kind == "blockquote_open":
            w.block()
            w.parts.append("<blockquote>")
            w.quotes += 1
        elif kind == "blockquote_close":
            w.quotes -= 1
            w.trim()
            w.parts.append("</blockquote>")
        elif kind in ("fence", "code_block"):
            w.block()
            lang = _LANG.sub("", tok.info.split()[0]) if tok.info.strip() else ""
            code = _esc(tok.content.rstrip("\n"))
            if lang:
                w.parts.append(f'<pre><code class="language-{lang}">{code}</code></pre>')
            else:
                w.parts.append(f"<pre>{code}</pre>")
        elif kind == "hr":
            w.block()
            w.parts.append("———")
        elif kind == "html_block":
            w.block()
            w.parts.append(_esc(tok.content.rstrip("\n")))
    return w.text().strip()
