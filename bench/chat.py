"""Generated chat text shared by the benchmarks: seeded, so every system in a run (and every
run) gets the same stream of lines.

Imported as a sibling module (`from chat import chat_line`): the bench scripts run as
`python bench/<script>.py`, which puts bench/ on sys.path; bench/ is not an installed package."""

from __future__ import annotations

import random

SEED = 20240601

WORDS = (
    "the a we they it this that our your my team site node link radio truck convoy bridge road "
    "north south east west river camp base checkpoint supply water fuel food medic shift patrol "
    "report update status eta ok copy roger received moving arrived leaving waiting blocked clear "
    "need have send check confirm please thanks soon later now today tonight tomorrow morning "
    "battery generator antenna laptop usb stick sync bundle map grid sector zone window door gate "
    "is are was will can should must not still again already just only about around near behind "
    "two three five ten twenty hundred km hours minutes litres boxes crates people vehicles"
).split()
MENTIONS = ("@alice", "@bob", "@carol", "@dmitri", "@eve", "@ops", "@hq")
EMOJI = ("👍", "✅", "🚚", "⚠️", "🔋", "📡", "🙏", "😅", "🎉", "❄️")
ENDINGS = (".", ".", ".", "!", "?", "...", "")


def chat_word(rng: random.Random) -> str:
    roll = rng.random()
    word = rng.choice(MENTIONS) if roll < 0.015 else rng.choice(EMOJI) if roll < 0.035 else rng.choice(WORDS)
    return word + "," if rng.random() < 0.06 else word


def chat_line(rng: random.Random) -> str:
    """One chat-like line of 20-200 characters: words, sometimes @mentions, emoji, commas."""
    target, ending = rng.randint(20, 200), rng.choice(ENDINGS)
    words = [chat_word(rng)]
    while len(" ".join(words)) + len(ending) < target:
        words.append(chat_word(rng))
    while len(words) > 1 and len(" ".join(words)) + len(ending) > target:
        words.pop()
    words[-1] = words[-1].rstrip(",")
    while len(" ".join(words)) + len(ending) < 20:
        words.append("ok")
    line = " ".join(words) + ending
    return line[0].upper() + line[1:]


def chat_lines(count: int, seed: int = SEED) -> list[str]:
    """The first `count` lines of the stream for `seed`: a longer run starts with a shorter one's."""
    rng = random.Random(seed)
    return [chat_line(rng) for _ in range(count)]
