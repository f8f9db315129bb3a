"""Answers about the person come from what they told, and the reply never speaks as them.

A small model given the person's facts in its prompt still invents ("You're training for the
2023 Berlin Olympic marathon") or copies them as its own ("I'm Priya"): bench/reply_quality.py
measured 0.34 fact accuracy and 0.93 invented answers on the bundled 135M model, and no prompt
wording fixed it. So both are decided in code, per reply:

- `ground`: a question about the person ("what is my cat called?"), and the statement that would
  answer it ("my cat is called something", `as_statement`), are matched against the recalled
  statements; the best one above a relevance threshold becomes the reply's opening,
  turned to the second person ("You told me you have a cat called Mango."), which the model may
  continue; with none above it the reply says plainly that the person has not said.
- `SlipGuard`: a sentence of the reply that puts the person's name or facts next to "I"/"my"
  ("I'm Priya", "my cat Mango") is turned to the second person before it is shown.

Both are pure functions of one reply's question, recall and text: they work per row whatever
the engine batches, and the same for a person's adapter and the base model.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.memory.recall import Recalled

# Mean cosine (MiniLM, normalised) of the question and of its statement form (`as_statement`)
# with a recalled statement, above which the statement answers it. Chosen with
# bench/grounding_eval.py on its development set and the tuning people of bench/reply_quality.py
# (never the held-out slices); fact accuracy / never-said answered, dev and tuning:
#   0.32: 0.95 / 0.05, 1.00 / 0.03   0.34: 0.95 / 0.04, 1.00 / 0.03   0.36: 0.91 / 0.04, 1.00 / 0.00
#   0.38: 0.90 / 0.02, 1.00 / 0.00   0.40: 0.88 / 0.00, 1.00 / 0.00
RELEVANCE = 0.36
# Tokens the model may add after a grounded opening (0: the opening is the whole reply) where
# the engine has no model profile saying (core/llm/profiles.py `continue_tokens`).
CONTINUATION_TOKENS = 24
NOT_TOLD = "You haven't told me that yet, so I don't know. If you tell me, I'll remember it."

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WORD = re.compile(r"[\w']+")
_ASKS = re.compile(
    r"^(?:(?:in|at|on|for|from|to|with|by) )?(?:what|what's|whats|which|where|when|who|whose|how old|how many|how long)\b"
    r"|^(?:do|did|can) you (?:remember|know|recall)\b"
    r"|^(?:am|do|did|is|was|have|are) (?:i|my)\b",
    re.IGNORECASE,
)
# "how can I", "what should I": asking for advice, not about themselves; "what did I ask",
# "what did we talk about": about the conversation, which the model has in its prompt
_ADVICE = re.compile(
    r"\b(?:should|could|can|would|shall|might) i\b|\bwhat'?s a good\b"
    r"|\b(?:did|do|have) (?:i|we) (?:ask|say|tell|mention|write|send|talk|discuss|plan)"
    r"|\bdid we\b|\bsaid about\b",
    re.IGNORECASE,
)
_SELF = {"i", "i'm", "im", "my", "me", "mine", "myself", "i've", "i'd", "i'll"}
# words with which a sentence claims something as the speaker's own ("tell me" claims nothing)
_CLAIM = _SELF - {"me"}
_GREETING = re.compile(r"^(?:hi|hello|hey|hiya|good (?:morning|evening|afternoon))\b[\s,!.]*", re.IGNORECASE)
# a comma or "and" before "I"/"my" starts another statement when at least three words follow
# ("I can't eat cashews, I'm allergic" stays one: "you're allergic" alone answers nothing)
_NEXT = r"(?=(?:and\s+)?(?:i|my|i'm|i've)\b\S*(?:\s+\S+){2,})"
_CLAUSES = re.compile(rf"(?<=[.!?;])\s+|\n+|,\s*{_NEXT}|\s+and\s+{_NEXT}", re.IGNORECASE)
# words that start a told sentence and are no name: lower case after "You told me"
_STARTERS = {"these", "this", "that", "the", "last", "next", "every", "since", "today", "yesterday",
             "recently", "now", "at", "in", "on", "after", "before", "when", "as", "so", "also",
             "actually", "well", "yeah", "yes", "oh", "and", "but", "we", "our", "there", "a", "an"}  # fmt: skip

# first person -> second person (lowercase keys; case is restored)
_SWAP = {
    "i": "you",
    "i'm": "you're",
    "im": "you're",
    "i've": "you've",
    "i'd": "you'd",
    "i'll": "you'll",
    "me": "you",
    "my": "your",
    "mine": "yours",
    "myself": "yourself",
    "am": "are",
    "was": "were",
}
_PRONOUN = re.compile(r"(?<![\w'])(?:i'm|i've|i'd|i'll|im|i|me|my|mine|myself)(?![\w'])", re.IGNORECASE)
_MEMORY_VERB = {"is": "are", "has": "have", "was": "were", "does": "do"}


@dataclass(frozen=True)
class Grounding:
    """How a reply about the person starts: `opening` is shown first; the model then adds at
    most `continue_tokens` (0: the opening is the whole reply; None: as the model's profile says)."""

    opening: str
    known: bool  # a recalled statement answers the question
    source: str = ""  # the statement, as the person said it
    score: float = 0.0
    continue_tokens: int | None = None


def asks_about_person(text: str) -> bool:
    """A one-sentence question about the person themselves ("where do I work?"), not a request
    for advice ("how can I sleep better?") or about the world."""
    text = text.strip()
    words = [w.lower() for w in _WORD.findall(text)]
    if not words or len(words) > 16 or "?" not in text[-2:]:
        return False
    if text.count("?") > 1 or _ADVICE.search(text):
        return False
    return bool(_ASKS.search(text)) and any(w in _SELF for w in words)


def second_person(text: str) -> str:
    """A first-person statement as said back to its author: "I'm Priya" -> "you're Priya"."""

    def swap(match: re.Match[str]) -> str:
        return _SWAP[match.group(0).lower()]

    out = _PRONOUN.sub(swap, text)
    # "am"/"was" follow "I" only: swap them where the pronoun just became "you"
    return re.sub(r"(?<=\byou )(am|was)\b", lambda m: _SWAP[m.group(1).lower()], out, flags=re.IGNORECASE)


def _memory_second_person(text: str) -> str:
    """A consolidated memory ("Lives in Leeds", "Is called Priya") as "you live in Leeds"."""
    first, _, rest = text.strip().partition(" ")
    verb = first.lower()
    if verb in _MEMORY_VERB:
        verb = _MEMORY_VERB[verb]
    elif verb.endswith("ing"):
        verb = "are " + verb
    elif verb.endswith("ies"):
        verb = verb[:-3] + "y"
    elif verb.endswith("s") and not verb.endswith("ss"):
        verb = verb[:-1]
    return f"you {verb} {rest}".strip()


def statements(recalled: Sequence[Recalled], said: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(as said, said back) for every first-person statement in the person's recalled turns
    and memories and in `said` (their own recent messages in this chat, which recall leaves
    out): "Hi, I'm Priya, I work as a nurse" gives two."""
    out: list[tuple[str, str]] = []
    items = [*recalled, *(Recalled(text=t, kind="turn", score=0.0, ts=_EPOCH) for t in said)]
    for item in items:
        if item.kind == "turn":
            if item.role != "user":
                continue
            for clause in _CLAUSES.split(_MEDIA_MARK.sub("", item.text)):
                clause = _GREETING.sub("", clause.strip()).strip(" ,;").rstrip(".!")
                name = _name_in(clause)
                words = {w.lower() for w in _WORD.findall(clause)}
                if not name and (not clause or clause.endswith("?") or not words & _SELF or len(words) < 2):
                    continue
                out.append((clause, f"your name is {name}" if name else second_person(clause)))
        elif item.kind not in ("summary", "question"):
            text = item.text.strip().rstrip(".")
            if text:
                out.append((text, _memory_second_person(text)))
    seen: set[str] = set()
    unique = []
    for said, back in out:
        if said.lower() not in seen:
            seen.add(said.lower())
            unique.append((said, back))
    return unique


# what a voice note or photo became (core/media/): the words are the person's, the label is ours
_MEDIA_MARK = re.compile(r"^\((?:voice note|photo)\)\s*")
_SELF_NAME = re.compile(
    r"^(?i:i'm|i am|call me|my name is|my name's)\s+([A-Z][\w'-]*(?: [A-Z][\w'-]*)?)(?i:,? (?:by the way|btw))?$"
    r"|^([A-Z][\w'-]*) here$"  # "Hey, Tomasz here"
)


def _name_in(said: str) -> str | None:
    """The name in a statement that only says who the person is ("I'm Priya"), else None."""
    match = _SELF_NAME.match(said)
    return (match.group(1) or match.group(2)) if match else None


_POSSESSED = re.compile(r"\b(?:my|your)\s+([\w]+)", re.IGNORECASE)
# a question and a statement about different things of the person's ("my name" vs "my
# sister's name") are not a match however close their embeddings; the same thing is a better one
OTHER_THING, SAME_THING = 0.25, 0.1


def _as_embedded(said: str) -> str:
    """What is embedded for a statement: a bare "I'm Priya" says what it is about."""
    name = _name_in(said)
    return f"My name is {name}" if name else said


def _things(text: str) -> set[str]:
    return {m.group(1).lower().removesuffix("'s").removesuffix("\u2019s") for m in _POSSESSED.finditer(text)}


# "Which race am I getting ready for?" -> "I am getting ready for the race": what answers a
# question is a statement, and a statement embeds nearer a statement of the same thing than a
# question about it ("...the Paris 10k": cosine 0.29 with the question, higher with the rewrite)
_WH = re.compile(
    r"^(?:(?:in|at|on|for|from|to|with|by) )?(?P<wh>what's|whats|what|which|where|when|who|whose)"
    r"(?P<focus>(?: (?:kind|sort|type) of)?(?: (?!(?:am|do|did|is|was|have|are|does)\b)[\w-]+){0,2}?)"
    r" (?P<aux>am|do|did|is|was|have|are|does) (?P<subject>i|my [\w-]+(?:'s [\w-]+)?)\b(?P<tail>.*)$",
    re.IGNORECASE,
)
_WHATS = re.compile(r"^(what's|whats|what is) (?=my )", re.IGNORECASE)
_REMEMBER = re.compile(r"^(?:do|did|can) you (?:remember|know|recall) ", re.IGNORECASE)
_ASKS_NAME = re.compile(
    r"\bmy name\b|^who (?:am i|i am)$|^what name\b|\bwhat (?:am i|i'm|i am) called\b|\bwhat do you call me\b",
    re.IGNORECASE,
)
_NAME_STATEMENT = "My name is"
_THING = re.compile(r"^my [\w-]+(?:'s [\w-]+)?$", re.IGNORECASE)  # "(do you remember) my cat's name"
# "where did I grow up" -> "I grew up": the past of the verbs people tell about themselves with
_PAST = {"grow": "grew", "go": "went", "get": "got", "buy": "bought", "have": "had", "do": "did",
         "make": "made", "meet": "met", "take": "took", "begin": "began", "leave": "left",
         "come": "came", "give": "gave", "find": "found", "choose": "chose", "study": "studied"}  # fmt: skip
_BLANK = {"where": "in some place", "when": "at some time", "who": "someone", "what": "something"}
_AUX_AS_SAID = {
    "do": "",
    "does": "",
    "did": "",
    "am": "am",
    "is": "is",
    "was": "was",
    "have": "have",
    "are": "am",
}


def as_statement(question: str) -> str:
    """A question about the person as the statement that would answer it, less the answer
    ("What did I name my cat?" -> "I named my cat"; "What's my job?" -> "my job is"); a
    question of another shape as it is. What is embedded to find the statement that answers."""
    text = _REMEMBER.sub("", question.strip().rstrip("?!. ").strip())
    if _ASKS_NAME.search(text):
        return _NAME_STATEMENT
    if _THING.match(text):
        return f"{text} is"
    text = _WHATS.sub("what is ", text)
    match = _WH.match(text)
    if match is None:
        return question
    subject, aux, tail = match["subject"], match["aux"].lower(), match["tail"].strip()
    focus = match["focus"].strip()
    if aux == "did" and tail:  # "did I name my cat" -> "I named my cat"
        verb, _, rest = tail.partition(" ")
        lowered = verb.lower()
        past = _PAST.get(lowered) or (lowered + "d" if lowered.endswith("e") else lowered + "ed")
        tail = f"{past} {rest}".strip()
    # the answer's place, said plainly: "where do I live" -> "I live in some place"
    blank = f"the {focus}" if focus else _BLANK.get(match["wh"].lower(), "")
    words = [subject, _AUX_AS_SAID[aux], tail, blank]
    return " ".join(w for w in words if w)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def relevance(question: str, said: str, cosine: float) -> float:
    """The embedding's cosine, moved by whether both speak of the same thing of the person's."""
    asked, told = _things(question), _things(_as_embedded(said))
    if asked and told:
        return cosine + (SAME_THING if asked & told else -OTHER_THING)
    return cosine


def ground(
    question: str,
    recalled: Sequence[Recalled],
    embed: Callable[[list[str]], list[list[float]]],
    *,
    said: Sequence[str] = (),
    question_vector: Sequence[float] | None = None,
    threshold: float = RELEVANCE,
) -> Grounding | None:
    """The opening of a reply to a question about the person, or None when it is not one.

    `embed` is the store's embedder (normalised vectors); `question_vector`, when the message
    was embedded already, saves one call."""
    if not asks_about_person(question):
        return None
    found = statements(recalled, said)
    if not found:
        return Grounding(NOT_TOLD, known=False)
    texts = [_as_embedded(said) for said, _ in found]
    asked = as_statement(question)
    extra = ([] if question_vector is not None else [question]) + ([] if asked == question else [asked])
    vectors = embed(texts + extra)
    views = [list(question_vector)] if question_vector is not None else []
    views += vectors[len(texts) :]
    vectors = vectors[: len(texts)]
    scores = [
        relevance(question, said, sum(_cosine(q, v) for q in views) / len(views))
        for (said, _), v in zip(found, vectors, strict=True)
    ]
    best = max(range(len(found)), key=scores.__getitem__)
    if as_statement(question) == _NAME_STATEMENT:  # asked their name: what they said it is
        named = [i for i, (said, _) in enumerate(found) if _name_in(said)]
        if named:
            best = named[-1]
            scores[best] = max(scores[best], threshold)
    if scores[best] < threshold:
        return Grounding(NOT_TOLD, known=False, score=scores[best])
    said, back = found[best]
    # "What's my name?" -> "Your name is Priya." ("You told me your name is" reads as doubt)
    first = back.split(" ", 1)[0]
    if first.lower() in _STARTERS:  # "These days you live in Tallinn" -> "...told me these days"
        back = first.lower() + back[len(first) :]
    opening = f"Y{back[1:]}." if _name_in(said) else f"You told me {back}."
    return Grounding(
        opening,
        known=True,
        source=said,
        score=scores[best],
    )


# --- never as the person -------------------------------------------------------------------------

_STOP = set(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "with",
        "by",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "am",
        "i",
        "i'm",
        "my",
        "me",
        "mine",
        "you",
        "your",
        "yours",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "have",
        "has",
        "had",
        "do",
        "does",
        "did",
        "not",
        "no",
        "so",
        "very",
        "just",
        "really",
        "called",
        "name",
        "named",
        "live",
        "lives",
        "living",
        "work",
        "works",
        "working",
        "play",
        "plays",
        "playing",
        "drive",
        "drives",
        "training",
        "learning",
        "year",
        "years",
        "this",
        "in",
        "a",
        "band",
        "hi",
        "hello",
        "hey",
        "there",
        "what",
        "who",
        "which",
    ]
)
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n|$)")
WINDOW = 5  # words between "I"/"my" and the person's own word for a sentence to claim it


class SlipGuard:
    """Keeps the person's name and facts theirs in one reply's text.

    A sentence is a slip when a first-person word ("I", "I'm", "my") comes at most WINDOW words
    before one of the person's own words (their name, the distinctive words of what they told);
    its first-person words from there on are turned to the second person ("I'm Priya" ->
    "you're Priya"). While a sentence that might become a slip is still being written it waits;
    other text is shown at once."""

    def __init__(self, name: str, told: Sequence[str]) -> None:
        own = {w.lower() for w in _WORD.findall(name)} - _STOP
        for said in told:
            own |= {w.lower() for w in _WORD.findall(said) if len(w) >= 3} - _STOP
        self.own = frozenset(own)

    def _fix(self, sentence: str) -> str:
        words = list(re.finditer(r"[\w']+", sentence))
        lowered = [w.group(0).lower() for w in words]
        starts: list[int] = []
        for j, word in enumerate(lowered):
            if word not in self.own:
                continue
            for k in range(max(0, j - WINDOW), j):
                if lowered[k] in _CLAIM:
                    starts.append(words[k].start())
                    break
        if not starts:
            return sentence
        cut = min(starts)
        fixed = second_person(sentence[cut:])
        if cut == 0 or not sentence[:cut].strip():
            fixed = fixed[:1].upper() + fixed[1:]
        return sentence[:cut] + fixed

    def shown(self, text: str, *, final: bool) -> str:
        """What of the reply so far may be shown: finished sentences, fixed; an unfinished one
        as it is unless it has a first-person word (then it waits for its end)."""
        if not self.own:
            return text
        out: list[str] = []
        for match in _SENTENCE.finditer(text):
            if match.start() == match.end():
                break
            sentence = match.group(0)
            ended = bool(re.search(r"[.!?\n]$", sentence))
            if not ended and not final:
                if any(w.lower() in _CLAIM for w in _WORD.findall(sentence)):
                    return "".join(out)  # may become a slip: wait
                out.append(sentence)
                return "".join(out)
            out.append(self._fix(sentence))
        return "".join(out)

    async def guard(self, stream: AsyncIterator[str]) -> AsyncIterator[str]:
        """The stream, slips fixed (see `shown`)."""
        text, sent = "", ""
        async for delta in stream:
            text += delta
            now = self.shown(text, final=False)
            if now.startswith(sent) and len(now) > len(sent):
                yield now[len(sent) :]
                sent = now
        now = self.shown(text, final=True)
        if now.startswith(sent) and len(now) > len(sent):
            yield now[len(sent) :]
        # a fixed sentence never changes what was shown before it (fixes stay inside one sentence)


def for_reply(
    question: str,
    name: str,
    recalled: Sequence[Recalled],
    said: Sequence[str],
    embed: Callable[[list[str]], list[list[float]]],
    *,
    question_vector: Sequence[float] | None = None,
    profile: str = "",
    grounded: bool = True,
) -> tuple[Grounding | None, SlipGuard]:
    """One reply's grounding (None when the message is no question about the person, or
    `grounded` is off) and its slip guard over the person's name, profile and statements,
    this message's own among them (a first reply echoed "I'm allergic to pollen" as its own)."""
    told = [s for s, _ in statements(recalled, [*said, question])] + ([profile] if profile else [])
    guard = SlipGuard(name, told)
    if not grounded:
        return None, guard
    return ground(question, recalled, embed, said=said, question_vector=question_vector), guard


_SENTENCE_DONE = re.compile(r"[.!?](?=\s)")
# a sentence after "You told me …" that takes it back or hedges it ("I'm sorry, but you don't
# have a cat.") would make the person doubt what they did say: such a sentence is left out
_TAKES_BACK = re.compile(r"\b(?:not|no|never|sorry|unfortunately|however|but)\b|n't\b", re.IGNORECASE)


async def one_sentence(stream: AsyncIterator[str]) -> AsyncIterator[str]:
    """At most one whole sentence of `stream`: what the model adds after a grounded opening is
    one sentence or nothing (a sentence cut by the token cap is dropped, and so is one that
    takes the opening back), so it cannot drift or contradict what the person said."""
    text = ""
    async for delta in stream:
        text += delta
        end = _SENTENCE_DONE.search(text, 1)
        if end is not None:
            if not _TAKES_BACK.search(text[: end.end()]):
                yield text[: end.end()]
            return  # closing the stream frees the engine's row
    end = max(text.rfind(c) for c in ".!?")
    if end > 0 and len(text.strip()) > 1 and not _TAKES_BACK.search(text[: end + 1]):
        yield text[: end + 1]


# --- the reply ---------------------------------------------------------------------------------


async def reply_stream(
    engine: Any,
    messages: list[dict[str, str]],
    *,
    grounding: Grounding | None = None,
    guard: SlipGuard | None = None,
    **kwargs: Any,
) -> AsyncIterator[str]:
    """The reply's text: a grounded opening first (shown at once), then what the model adds
    (after the opening when the engine continues a given start, `accepts_prefix`), every
    sentence through the slip guard."""

    if grounding is None:
        stream = engine.stream(messages, **kwargs)
    else:
        yield grounding.opening  # said back in the second person already: not guarded
        tokens = grounding.continue_tokens
        if tokens is None:  # as much as the model's profile lets it add
            tokens = getattr(getattr(engine, "profile", None), "continue_tokens", CONTINUATION_TOKENS)
        if tokens <= 0 or not getattr(engine, "accepts_prefix", False):
            return
        # the reply cap still holds (CONFIDANTE_MAX_NEW_TOKENS, which the engine applies by default)
        cap = kwargs.get("max_new_tokens") or getattr(
            getattr(engine, "settings", None), "max_new_tokens", None
        )
        kwargs["max_new_tokens"] = tokens if cap is None else min(cap, tokens)
        stream = one_sentence(engine.stream(messages, prefix=grounding.opening, **kwargs))
    if guard is not None:
        stream = guard.guard(stream)
    async for delta in stream:
        yield delta
