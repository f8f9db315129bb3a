"""OCR accuracy on generated images: receipt- and ticket-like lines rendered with Pillow at several
font sizes and rotation angles, read by core/media/ocr.py (RapidOCR, models inside the wheel).

Character accuracy = 1 - (edit distance / reference characters), over all text of an image,
whitespace-insensitive; "lines" = share of reference lines found verbatim.

    python bench/ocr_eval.py [--sizes 12,16,24,36] [--angles 0,5,15,-30,90]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.media_data import text_image  # noqa: E402
from core.media.ocr import read_text  # noqa: E402

TEXTS = [
    ["INVOICE 4721", "Total due 58.40 EUR", "Pay by 2026-03-31"],
    ["Ticket OPS-1182: login fails", "after password reset on iOS"],
    ["Standup moved to 9:45", "Room B, bring the Q3 numbers"],
]
TARGET_ACCURACY = 0.95  # on text at 16 px and larger, rotated up to 15 degrees


def distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def squash(text: str) -> str:
    return "".join(text.split())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="12,16,24,36")
    ap.add_argument("--angles", default="0,5,15,-30,90")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    angles = [float(a) for a in args.angles.split(",")]
    read_text(text_image(["warm up"], size=24))  # model load
    print(f"{'size px':>8}{'angle':>7}{'char acc':>10}{'lines':>8}{'s/image':>9}")
    in_target: list[float] = []
    for size in sizes:
        for angle in angles:
            errors = chars = found = lines = 0
            seconds = 0.0
            for lines_ in TEXTS:
                image = text_image(lines_, size=size, angle=angle)
                t0 = time.perf_counter()
                got = read_text(image)
                seconds += time.perf_counter() - t0
                ref = squash("".join(lines_))
                errors += min(len(ref), distance(ref, squash(got)))
                chars += len(ref)
                found += sum(squash(line) in squash(got) for line in lines_)
                lines += len(lines_)
            acc = 1 - errors / chars
            if size >= 16 and abs(angle) <= 15:
                in_target.append(acc)
            print(f"{size:>8}{angle:>7.0f}{acc:>10.1%}{found / lines:>8.0%}{seconds / len(TEXTS):>9.2f}")
    mean = sum(in_target) / len(in_target) if in_target else 0.0
    verdict = "met" if mean >= TARGET_ACCURACY else "missed"
    print(
        f"\ntarget: character accuracy >= {TARGET_ACCURACY:.0%} at >= 16 px and <= 15 degrees: "
        f"{mean:.1%} ({verdict}); timings are wall seconds (an upper bound unless run under the CPU lock)"
    )


if __name__ == "__main__":
    main()
