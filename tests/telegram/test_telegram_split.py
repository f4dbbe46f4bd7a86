"""The splitter and the HTML renderer: property tests (hypothesis) and the cases that broke the earlier bot."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machina.telegram.render import to_html
from machina.telegram.split import LIMIT, split_message, split_parts, utf16_len
from machina.testing.telegram_api import ApiError, parse_html

# \U0001d518: an astral letter (a surrogate pair in UTF-16)
EMOJI = ["😀", "👩‍👩‍👧‍👦", "🇰🇷", "👍🏽", "❤️", "é", "ü", "\U0001d518", "中"]
pieces = st.one_of(
    st.sampled_from(EMOJI),
    st.sampled_from(["\n", "\n\n", " ", "```", "```python\n", "\n```\n", "`x`", "<b>", "&amp;", "word"]),
    st.text(min_size=1, max_size=30),
)
texts = st.lists(pieces, max_size=400).map("".join)


@settings(max_examples=200, deadline=None)
@given(texts, st.integers(min_value=64, max_value=600))
def test_parts_fit_and_give_back_the_text(text: str, limit: int) -> None:
    parts = split_parts(text, limit)
    assert "".join(p.body for p in parts) == text
    for part in parts:
        assert utf16_len(part.render()) <= limit
        assert part.body  # no empty cut: the loop always advances


@settings(max_examples=200, deadline=None)
@given(texts)
def test_chunks_render_as_html_the_server_accepts(text: str) -> None:
    for chunk in split_message(text, 300):
        visible = parse_html(to_html(chunk))  # raises ApiError for unbalanced tags
        assert utf16_len(visible) <= 300


def test_emoji_are_never_cut_in_half() -> None:
    for emoji in EMOJI:
        text = "a" + emoji * 3000
        chunks = split_message(text)
        assert all(utf16_len(c) <= LIMIT for c in chunks)
        assert "".join(chunks) == text
        assert all(c.replace("a", "", 1).replace(emoji, "") == "" for c in chunks), emoji


def test_the_earlier_bots_fault_code_points_are_not_the_unit() -> None:
    text = "😀" * 4096  # 4096 code points, 8192 UTF-16 units: one message for a code-point counter
    chunks = split_message(text)
    assert len(chunks) == 2 and all(utf16_len(c) == 4096 for c in chunks)


def test_cuts_prefer_paragraphs_then_lines_then_words() -> None:
    para = "x" * 3000
    assert split_message(f"{para}\n\n{para}") == [f"{para}\n\n", para]
    line = "y " * 1500
    chunks = split_message(f"{line}\n{line}")
    assert chunks[0].endswith("\n")
    words = " ".join(["word"] * 2000)
    assert all(not c.strip().endswith("wor") for c in split_message(words))


def test_code_fences_are_closed_and_reopened_with_their_language() -> None:
    code = "```python\n" + "print('hello')\n" * 600 + "```\nafter"
    chunks = split_message(code)
    assert len(chunks) >= 3
    for chunk in chunks[:-1]:
        assert chunk.rstrip().endswith("```")
    for chunk in chunks[1:-1]:
        assert chunk.startswith("```python\n")
    html = [to_html(c) for c in chunks]
    assert all('<pre><code class="language-python">' in h for h in html[:-1])
    assert all(h.count("<pre>") == h.count("</pre>") for h in html)


def test_rendering_escapes_what_telegram_would_parse() -> None:
    html = to_html("a < b && c > d <script>alert(1)</script> `x<y`")
    assert parse_html(html) == "a < b && c > d <script>alert(1)</script> x<y"
    assert "<script>" not in html


def test_the_fake_refuses_broken_html_like_the_real_server() -> None:
    with pytest.raises(ApiError, match="can't parse entities"):
        parse_html("<b>open")
    with pytest.raises(ApiError, match="Unsupported start tag"):
        parse_html("<script>x</script>")


def test_a_limit_too_small_for_the_fences_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 64"):
        split_parts("x", 10)
    assert re.fullmatch(r"x+", split_message("x" * 100)[0])
