"""Each model's default sampling, chosen by bench/reply_quality.py.

A 135M model and an 8B model want different settings: the small one loops and drifts unless its
reply is kept on a short leash, a big one does not need it and loses nuance under heavy
penalties. Settings (CONFIDANTE_TEMPERATURE, CONFIDANTE_TOP_P) and a caller override a profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.llm.sampling import Sampling

_STOPS = ("<|im_start|>", "<|im_end|>", "<|eot_id|>", "\nUser:", "\nuser:")


@dataclass(frozen=True)
class Profile:
    name: str
    sampling: Sampling
    # tokens the model may add after a grounded opening ("You told me ...", core/grounding.py):
    # one sentence at most; 0 = the opening is the whole reply
    continue_tokens: int = 24


# The small profile against one field changed at a time (bench/reply_quality.py --set, tuning
# slice, seeds 1 2; requests on task / degenerate share of requests and first messages / their
# median words). Two runs of this profile gave 0.80 and 0.76 on task: differences that size are
# noise; the penalties and the nudge to end are what hold replies together.
#   this profile 0.80 / 0.00 / 40     temperature 0.7 0.69 / 0.00 / 38   greedy 0.72 / 0.00 / 40
#   repetition 1.0 0.74 / 0.02 / 39   repetition 1.2 0.72 / 0.00 / 36   no n-gram ban 0.71 / 0.00 / 40
#   no min-p, top-k 0.76 / 0.00 / 38  frequency 0.3 0.66 / 0.00 / 38    presence 0.3 0.72 / 0.00 / 39
#   penalties and repeat stop off 0.66 / 0.16 / 40                      no end nudge 0.76 / 0.07 / 60
SMALL = Profile(
    "small (<= 0.5B, the bundled SmolLM2-135M)",
    Sampling(
        temperature=0.3,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        repetition_penalty=1.1,
        frequency_penalty=0.0,
        presence_penalty=0.0,
        no_repeat_ngram=4,
        stop=_STOPS,
        stop_on_repeat=True,
        end_bonus_after=40,
        end_bonus=0.5,
    ),
    # what the 135M model added after "You told me ..." was mostly filler or made up ("That's a
    # beautiful name, and it means 'beet' in Italian."): the opening is the whole answer
    # (bench/reply_quality.py, 0 vs 24 tokens: same facts, shorter, nothing invented after them)
    continue_tokens=0,
)

GENERIC = Profile(
    "1B-8B Llama-family",
    Sampling(
        temperature=0.6,
        top_p=0.9,
        top_k=50,
        min_p=0.02,
        repetition_penalty=1.05,
        no_repeat_ngram=0,
        stop=_STOPS,
        stop_on_repeat=True,
        end_bonus_after=200,
        end_bonus=0.3,
    ),
)


def profile_for(loaded: object) -> Profile:
    """The profile for a loaded model: by its size (hidden width) where the config says,
    else by its name (SmolLM2-135M and -360M are small)."""
    config = getattr(getattr(loaded, "model", None), "config", None)
    hidden = getattr(config, "hidden_size", None)
    if isinstance(hidden, int):
        return SMALL if hidden <= 1024 else GENERIC
    name = str(getattr(loaded, "name", "")).lower()
    return SMALL if any(tag in name for tag in ("135m", "360m")) else GENERIC
