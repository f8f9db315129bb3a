"""Splitting long replies and rendering Markdown as Telegram HTML (checked by the fake's parser)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bots.channel import split_text, utf16_len
from bots.telegram_render import markdown_to_telegram_html
from tests.telegram.fake_bot_api import ApiError, parse_html

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})", re.MULTILINE)

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzé😀", min_size=1, max_size=10)
seps = st.sampled_from([" ", " ", " ", "\n", "\n\n", ". ", "! "])


@st.composite
def prose(draw) -> str:
    n = draw(st.integers(1, 120))
    return "".join(draw(words) + draw(seps) for _ in range(n))


@settings(max_examples=150, deadline=None)
@given(text=prose(), limit=st.integers(40, 300))
def test_chunks_fit_and_keep_every_word_whole(text: str, limit: int) -> None:
    chunks = split_text(text, limit, length=utf16_len)
    assert all(utf16_len(c) <= limit for c in chunks)
    assert " ".join(chunks).split() == text.split()


def test_prefers_paragraph_then_line_then_sentence() -> None:
    para = "First paragraph is here.\n\nSecond one. It has two sentences and continues"
    assert split_text(para, 40)[0] == "First paragraph is here."
    lines = "one line of text\nanother line here. And more words after it"
    assert split_text(lines, 40)[0] == "one line of text"
    sentences = "A short sentence. Another sentence that runs on and on"
    assert split_text(sentences, 30)[0] == "A short sentence."


def test_long_code_block_is_closed_and_reopened_never_cut_in_its_markup() -> None:
    code = "\n".join(f"    value_{i} = compute({i})" for i in range(80))
    text = f"Here is the code:\n\n```python\n{code}\n```\n\nThat is all."
    chunks = split_text(text, 500)
    assert len(chunks) > 3
    for chunk in chunks:
        assert len(chunk) <= 500
        assert len(FENCE.findall(chunk)) % 2 == 0, chunk
    for chunk in chunks[1:-1]:
        assert chunk.startswith("```python\n")
    body = [ln for c in chunks for ln in c.splitlines() if ln.startswith("    value_")]
    assert body == code.splitlines()
    # each piece renders as a proper <pre> block on its own
    for chunk in chunks[1:]:
        assert '<pre><code class="language-python">' in markdown_to_telegram_html(chunk)


def test_a_word_longer_than_the_limit_is_cut_and_nothing_lost() -> None:
    url = "https://example.com/" + "x" * 300
    chunks = split_text(f"see {url} now", 100)
    assert "".join(chunks).replace(" ", "") == f"see{url}now"
    assert all(len(c) <= 100 for c in chunks)


def test_limit_too_small_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        split_text("x" * 100, 3)


def test_renders_telegram_tags_and_escapes_the_models_text() -> None:
    html = markdown_to_telegram_html(
        "# Plan\n\n**bold** *it* ~~gone~~ `x<y` [site](https://e.com?a=1&b=2) "
        "<script>alert(1)</script> a & b\n\n- one\n- two\n\n```py\nif a < b: pass\n```"
    )
    assert html.startswith("<b>Plan</b>\n\n<b>bold</b> <i>it</i> <s>gone</s> <code>x&lt;y</code>")
    assert '<a href="https://e.com?a=1&amp;b=2">site</a>' in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; a &amp; b" in html
    assert "• one\n• two" in html
    assert '<pre><code class="language-py">if a &lt; b: pass</code></pre>' in html
    parse_html(html)  # Telegram accepts it


def test_empty_blocks_add_no_characters() -> None:
    assert parse_html(markdown_to_telegram_html("a\n#\na")) == "a\n\na"
    assert utf16_len(parse_html(markdown_to_telegram_html("* *"))) <= 3


def test_unsafe_link_schemes_stay_text() -> None:
    html = markdown_to_telegram_html("[click](javascript:alert(1)) and [f](file:///etc/passwd)")
    assert "<a " not in html


md_alphabet = st.sampled_from(list("ab *_`#->[]()!\n<&;\\~1.") + ["```", "**", "\n\n", "http://x.y", "&amp;"])


@settings(max_examples=300, deadline=None)
@given(st.lists(md_alphabet, max_size=60).map("".join))
def test_any_markdown_renders_to_html_telegram_accepts(text: str) -> None:
    html = markdown_to_telegram_html(text)
    try:
        visible = parse_html(html)
    except ApiError as exc:  # pragma: no cover - the failure message is the point
        raise AssertionError(f"{text!r} -> {html!r}: {exc.description}") from exc
    assert utf16_len(visible) <= utf16_len(text)


def test_odd_unicode_survives() -> None:
    text = "Zalgo: z̷̢a̶l̸g̵o — RTL: שלום — emoji 👩🏽‍💻 — zero-width:\u200b — NUL-free"
    assert parse_html(markdown_to_telegram_html(text)) == text
    chunks = split_text(text * 40, 300, length=utf16_len)
    assert "".join(c + " " for c in chunks).split() == (text * 40).split()
