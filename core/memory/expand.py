"""More than one way to ask: the keys a second search uses when the first one found half.

A multi-hop question ("What did Kevin do after the trip to Lisbon?") is answered by turns that
share little with the question and much with each other: the first search finds the turn about
Lisbon, whose names and rare words ("Sintra", "the hostel") lead to the turn that answers. The
second hop searches the full text with those words, taken from the first hop's best turns.
Names are the words written with a capital inside a sentence; rare words are those that occur
in few of the person's turns, which BM25's idf already tells (here: long words not in the
question, since the index is not asked).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from core.memory.textindex import analyse

_WORD = re.compile(r"[A-Za-z][\w'-]+")
_COMMON = frozenset(
    [
        "i",
        "im",
        "i'm",
        "ive",
        "i've",
        "id",
        "i'd",
        "ill",
        "i'll",
        "yes",
        "no",
        "ok",
        "okay",
        "oh",
        "hey",
        "hi",
        "hello",
        "lol",
        "haha",
        "yeah",
        "yep",
        "nope",
        "thanks",
        "thank",
        "please",
        "sure",
        "well",
        "so",
        "and",
        "but",
        "or",
        "the",
        "a",
        "an",
        "my",
        "your",
        "our",
        "their",
        "his",
        "her",
        "its",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "today",
        "tomorrow",
        "yesterday",
    ]
)


def entities(text: str) -> list[str]:
    """Words written with a capital that do not start a sentence: names, places, titles."""
    out = []
    for sentence in re.split(r"(?<=[.!?])\s+|\n", text):
        words = _WORD.findall(sentence)
        for word in words[1:]:
            if word[0].isupper() and word.lower() not in _COMMON:
                out.append(word)
    return out


def question_keys(question: str) -> str:
    """The names a question holds ("... at Alfama's hostel" -> "Alfama"): searched alone as well,
    so a turn that shares the rare name and none of the question's other words still ranks."""
    words = entities(question)
    return " ".join(dict.fromkeys(words))


def hop_terms(question: str, texts: Sequence[str], *, most: int = 8) -> str:
    """The words for a second search: the entities and longer words of the first hop's turns
    that the question does not already have, most frequent first."""
    asked = set(analyse(question))
    counts: Counter[str] = Counter()
    for text in texts:
        for word in entities(text):
            counts[word] += 2
        for word in _WORD.findall(text):
            if len(word) >= 6 and word.lower() not in _COMMON:
                counts[word.lower()] += 1
    chosen = []
    for word, _ in counts.most_common():
        stems = analyse(word)
        if stems and not set(stems) & asked:
            chosen.append(word)
        if len(chosen) >= most:
            break
    return " ".join(chosen)
