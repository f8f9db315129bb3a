"""Choosing each row's next token, and deciding when a reply has said enough.

Everything here is per row: one decode step's logits hold many people's replies (continuous
batching, per-person adapters), each with its own settings and its own history. Penalties look
only at the reply's OWN tokens, never the prompt's: the person's facts sit in the prompt, and a
penalty there punishes the very copying that answers "what is my dog called?" (measured with
transformers' `repetition_penalty`, which counts the prompt: fact accuracy 0.38 -> 0.29).
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# a sentence ends at . ! ? (then space) or at a line break
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Sampling:
    """One reply's sampling settings (a model's defaults live in core/llm/profiles.py)."""

    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.9
    top_k: int = 0  # 0 = the whole vocabulary
    min_p: float = 0.0  # drop tokens below min_p x the best token's probability
    repetition_penalty: float = 1.0  # CTRL-style, on tokens the reply already used
    frequency_penalty: float = 0.0  # subtracted once per earlier use in the reply
    presence_penalty: float = 0.0  # subtracted once if the reply used the token at all
    no_repeat_ngram: int = 0  # never emit an n-gram the reply already contains (0 = off)
    stop: tuple[str, ...] = ()  # the reply ends before the first of these
    stop_on_repeat: bool = False  # end the reply when it says a sentence a second time
    # from this many reply tokens on, end-of-turn gains `end_bonus` logits per further token,
    # right after a sentence ends: replies finish a thought, then stop
    end_bonus_after: int = 0
    end_bonus: float = 0.0

    def replace(self, **changes: Any) -> Sampling:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


class RowState:
    """One reply's sampler state: its settings, what it has generated, its n-gram table."""

    def __init__(
        self,
        sampling: Sampling,
        *,
        end_ids: frozenset[int] = frozenset(),
        sentence_end_ids: frozenset[int] = frozenset(),
        seed: int | None = None,
    ) -> None:
        self.sampling = sampling
        self.end_ids = end_ids
        self.sentence_end_ids = sentence_end_ids
        self.seed = seed
        self.tokens: list[int] = []
        self.counts: dict[int, int] = defaultdict(int)
        self._next_of: dict[tuple[int, ...], set[int]] = defaultdict(set)

    def observe(self, token: int) -> None:
        """Record a token the reply now contains."""
        self.tokens.append(token)
        self.counts[token] += 1
        n = self.sampling.no_repeat_ngram
        if n > 0 and len(self.tokens) >= n:
            self._next_of[tuple(self.tokens[-n:-1])].add(token)

    def banned(self) -> set[int]:
        """Tokens that would repeat an n-gram of this reply."""
        n = self.sampling.no_repeat_ngram
        if n <= 0 or len(self.tokens) < n - 1:
            return set()
        key = tuple(self.tokens[len(self.tokens) - n + 1 :]) if n > 1 else ()
        return self._next_of.get(key, set())

    def adjust(self, logits: Any) -> Any:
        """Apply this row's penalties, bans and end bonus to its (vocab,) float logits, in place."""
        import torch

        s = self.sampling
        if self.counts and (s.repetition_penalty != 1.0 or s.frequency_penalty or s.presence_penalty):
            ids = torch.tensor(list(self.counts), dtype=torch.long, device=logits.device)
            picked = logits[ids]
            if s.repetition_penalty != 1.0:
                picked = torch.where(picked > 0, picked / s.repetition_penalty, picked * s.repetition_penalty)
            if s.frequency_penalty or s.presence_penalty:
                counts = torch.tensor(list(self.counts.values()), dtype=logits.dtype, device=logits.device)
                picked = picked - s.frequency_penalty * counts - s.presence_penalty
            logits[ids] = picked
        banned = self.banned()
        if banned:
            logits[torch.tensor(sorted(banned), dtype=torch.long, device=logits.device)] = float("-inf")
        over = len(self.tokens) - s.end_bonus_after
        after_sentence = bool(self.tokens) and self.tokens[-1] in self.sentence_end_ids
        if s.end_bonus and s.end_bonus_after > 0 and over >= 0 and self.end_ids and after_sentence:
            ends = torch.tensor(sorted(self.end_ids), dtype=torch.long, device=logits.device)
            logits[ends] += s.end_bonus * (over + 1)
        return logits

    def pick(self, logits: Any) -> int:
        """The next token from this row's adjusted logits."""
        import torch

        s = self.sampling
        if s.temperature <= 0:
            return int(logits.argmax().item())
        logits = logits / s.temperature
        if 0 < s.top_k < logits.shape[-1]:
            values, order = torch.topk(logits, s.top_k)
        else:
            values, order = logits.sort(descending=True)
        probs = torch.softmax(values, dim=-1)
        keep = torch.ones_like(probs, dtype=torch.bool)
        if s.min_p > 0:
            keep &= probs >= s.min_p * probs[0]
        if 0 < s.top_p < 1:
            keep &= (probs.cumsum(0) - probs) <= s.top_p
        keep[0] = True  # the best token always stays
        probs = probs * keep
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=probs.device).manual_seed(self.seed + len(self.tokens))
        return int(order[torch.multinomial(probs, 1, generator=generator)].item())


def next_tokens(logits: Any, rows: Sequence[RowState]) -> list[int]:
    """One token per row from (rows, vocab) logits, each row under its own settings."""
    plain = [i for i, row in enumerate(rows) if row.sampling.temperature <= 0 and not _adjusts(row)]
    if len(plain) == len(rows):  # all greedy: one argmax, no copy (bf16 -> fp32 keeps the order)
        return [int(t) for t in logits.argmax(dim=-1).tolist()]
    logits = logits.float()
    greedy = logits[plain].argmax(dim=-1).tolist() if plain else []
    fast = dict(zip(plain, greedy, strict=True))
    out = []
    for i, row in enumerate(rows):
        if i in fast:
            out.append(int(fast[i]))
            continue
        out.append(row.pick(row.adjust(logits[i].clone())))
    return out


def _adjusts(row: RowState) -> bool:
    s = row.sampling
    return bool(row.tokens) and (
        s.repetition_penalty != 1.0
        or bool(s.frequency_penalty)
        or bool(s.presence_penalty)
        or s.no_repeat_ngram > 0
        or (s.end_bonus_after > 0 and bool(s.end_bonus))
    )


# --- when the reply has said enough ------------------------------------------------------------


def _norm(sentence: str) -> str:
    return " ".join(_WORD.findall(sentence.lower()))


def visible(text: str, sampling: Sampling, *, final: bool) -> tuple[str, bool]:
    """What of the reply so far may be shown, and whether the reply is finished.

    A stop string ends the reply before it (text that might be a stop string's start waits).
    With `stop_on_repeat`, a sentence said a second time ends the reply before it; while the
    sentence being written still matches an earlier one word for word, it waits, so the repeat
    is never shown. `final` (end-of-turn or the length cap) shows everything that waited.
    """
    for stop in sampling.stop:
        at = text.find(stop)
        if at >= 0:
            return text[:at].rstrip(), True
    shown = text
    if sampling.stop_on_repeat:
        shown, repeated = _until_repeat(text, final=final)
        if repeated:
            return shown, True
    if not final:
        for stop in sampling.stop:
            for k in range(min(len(stop) - 1, len(shown)), 0, -1):
                if shown.endswith(stop[:k]):
                    shown = shown[:-k]
                    break
    return shown, False


def _until_repeat(text: str, *, final: bool) -> tuple[str, bool]:
    seen: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        sentence = _norm(text[start : match.start()])
        if len(sentence) >= 6 and sentence in seen:
            return text[:start].rstrip(), True
        if sentence:
            seen.append(sentence)
        start = match.end()
    tail = _norm(text[start:])
    if final:
        if len(tail) >= 6 and tail in seen:
            return text[:start].rstrip(), True
        return text, False
    if tail and any(s.startswith(tail) for s in seen):
        return text[:start], False  # might be a repeat: wait for the sentence to differ or end
    return text, False


def sentence_end_ids(tokenizer: Any) -> frozenset[int]:
    """Vocabulary ids whose text ends a sentence (., !, ? or a line break), for the end bonus."""
    ids = set()
    for token, tid in tokenizer.get_vocab().items():
        text = tokenizer.convert_tokens_to_string([token]).rstrip(" ")
        if text.endswith((".", "!", "?", "\n")) and not text.endswith(("..", "...")):
            ids.add(tid)
    return frozenset(ids)
