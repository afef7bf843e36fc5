"""Words and their timings with pocketsphinx 5 (ships an English acoustic model, LM and dictionary).

With a transcript beside the media (``NAME.txt``: one utterance per non-empty line, or ``NAME.srt``: one
utterance per cue) the words are force-aligned; alignment works only with very wide beams (measured: the
default beams return no segmentation), so ``beam=1e-100, pbeam=1e-100, wbeam=1e-80``. Without a transcript
the speech is recognised with the default English LM: on clean synthetic speech that got 2 of 9 words
right (see tests), so recognised words are flagged as such, with each word's posterior probability and
their mean recorded as the reliability of the file.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

FRAME_RATE = 100  # pocketsphinx's default frate (frames per second)
_FILLERS = re.compile(r"^(<s>|</s>|<sil>|\[.*\]|\+\+.*\+\+|\(.*\))$", re.IGNORECASE)


@dataclass
class WordSettings:
    mode: str = "auto"  # auto: align when a transcript exists, else recognise; align; recognise
    beam: float = 1e-100
    pbeam: float = 1e-100
    wbeam: float = 1e-80
    pause_s: float = 1.0  # recognised speech without a transcript: a new segment after this silence
    silence_db: float = -45.0  # recognised words quieter than this (RMS dBFS) are dropped: the LM invents words

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Word:
    word: str
    start: float
    end: float
    prob: float


@dataclass
class Transcript:
    """Utterances of a file: ``(start, end) or None`` and text; from a .srt (timed) or .txt (untimed)."""

    source: str
    utterances: list[tuple[tuple[float, float] | None, str]] = field(default_factory=list)


def _srt_time(s: str) -> float:
    h, m, rest = s.strip().replace(".", ",").split(":")
    sec, ms = rest.split(",")
    return int(h) * 3600 + int(m) * 60 + int(sec) + int(ms) / 1000


def read_transcript(media: str | Path) -> Transcript | None:
    """The transcript beside ``media`` (same stem, ``.srt`` preferred over ``.txt``), or None."""
    media = Path(media)
    srt, txt = media.with_suffix(".srt"), media.with_suffix(".txt")
    if srt.is_file():
        text = srt.read_text(encoding="utf-8-sig", errors="replace")
        out = Transcript(str(srt))
        for block in re.split(r"\n\s*\n", text.strip()):
            lines = [ln for ln in block.splitlines() if ln.strip()]
            times = next((ln for ln in lines if "-->" in ln), None)
            if times is None:
                continue
            a, b = times.split("-->")
            words = " ".join(ln for ln in lines[lines.index(times) + 1 :])
            try:
                out.utterances.append(((_srt_time(a), _srt_time(b.split()[0])), words))
            except ValueError as e:
                raise ValueError(f"{srt}: bad cue time {times!r} ({e})") from None
        return out
    if txt.is_file():
        lines = [ln.strip() for ln in txt.read_text(encoding="utf-8-sig", errors="replace").splitlines()]
        return Transcript(str(txt), [(None, ln) for ln in lines if ln])
    return None


def normalise(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower().replace("’", "'"))


def _decoder(settings: WordSettings, align: bool):
    return _cached_decoder(settings.beam, settings.pbeam, settings.wbeam, align)


@lru_cache(maxsize=2)
def _cached_decoder(beam, pbeam, wbeam, align: bool):
    # loading the model takes ~1 s: one decoder per process and kind (files are decoded one at a time)
    from pocketsphinx import Decoder

    settings = WordSettings(beam=beam, pbeam=pbeam, wbeam=wbeam)
    if align:
        return Decoder(beam=settings.beam, pbeam=settings.pbeam, wbeam=settings.wbeam, loglevel="FATAL")
    return Decoder(loglevel="FATAL")


def _segments(decoder, offset: float) -> list[Word]:
    out = []
    for seg in decoder.seg():
        w = re.sub(r"\(\d+\)$", "", seg.word)
        if _FILLERS.match(seg.word) or not w or _FILLERS.match(w):
            continue
        out.append(Word(w, offset + seg.start_frame / FRAME_RATE, offset + (seg.end_frame + 1) / FRAME_RATE,
                        float(seg.prob)))
    return out


def _pcm(x: np.ndarray, dither: float = 1e-3) -> bytes:
    # dither (-60 dBFS, seeded): stretches of digital silence (exact zeros) make the alignment fail
    # (measured: 'the quick brown fox' + zeros returned no words; with this dither all four, same timings)
    noise = dither * np.random.RandomState(0).randn(len(x)) if dither else 0.0
    return (np.clip(x + noise, -1, 1) * 32767).astype(np.int16).tobytes()


def align_words(x: np.ndarray, text: str, settings: WordSettings | None = None, offset: float = 0.0,
                decoder=None) -> tuple[list[Word], list[str]]:
    """Force-align ``text`` to 16 kHz samples ``x``. Returns (words, out-of-vocabulary words left out)."""
    settings = settings or WordSettings()
    d = decoder or _decoder(settings, align=True)
    tokens = normalise(text)
    oov = [t for t in tokens if d.lookup_word(t) is None]
    tokens = [t for t in tokens if d.lookup_word(t) is not None]
    if not tokens or len(x) < 1600:
        return [], oov
    d.set_align_text(" ".join(tokens))
    # the alignment grammar starts and ends in silence: pad the span (an .srt cue may end right after a word)
    pad = np.zeros(int(0.25 * 16000), np.float32)
    d.start_utt()
    d.process_raw(_pcm(np.concatenate([pad, x, pad])), full_utt=True)
    d.end_utt()
    span = len(x) / 16000
    out = []
    for w in _segments(d, offset - 0.25):
        start, end = max(w.start, offset), min(w.end, offset + span)
        if end > start:
            out.append(Word(w.word, start, end, w.prob))
    return out, oov


def recognise_words(x: np.ndarray, settings: WordSettings | None = None, decoder=None) -> list[Word]:
    settings = settings or WordSettings()
    d = decoder or _decoder(settings, align=False)
    if len(x) < 1600:
        return []
    d.start_utt()
    d.process_raw(_pcm(x), full_utt=True)
    d.end_utt()
    return _segments(d, 0.0)


def extract_words(x: np.ndarray, transcript: Transcript | None, settings: WordSettings | None = None,
                  sample_rate: int = 16000) -> tuple[list[Word], list[tuple[float, float, str]], dict]:
    """Words, utterance segments ``(start, end, text)`` and a report for one file's 16 kHz samples."""
    settings = settings or WordSettings()
    if sample_rate != 16000:
        raise ValueError("pocketsphinx's English model needs 16 kHz audio")
    duration = len(x) / sample_rate
    mode = settings.mode
    if mode == "auto":
        mode = "align" if transcript is not None else "recognise"
    if mode == "align" and transcript is None:
        raise ValueError("words mode 'align' needs a transcript (.txt or .srt beside the media)")
    report: dict = {"mode": mode, "transcript": transcript.source if transcript else None}
    words: list[Word] = []
    segments: list[tuple[float, float, str]] = []
    if mode == "align":
        d = _decoder(settings, align=True)
        oov_all: list[str] = []
        timed = [u for u in transcript.utterances if u[0] is not None]
        if timed:  # .srt: align each cue on its own span
            for (a, b), text in transcript.utterances:
                i0, i1 = int(max(a, 0) * sample_rate), int(min(b, duration) * sample_rate)
                ws, oov = align_words(x[i0:i1], text, settings, offset=i0 / sample_rate, decoder=d)
                if not ws and normalise(text):  # cue times rarely fall in silence: retry on a wider span
                    i0, i1 = max(0, i0 - sample_rate // 2), min(len(x), i1 + sample_rate // 2)
                    ws, oov = align_words(x[i0:i1], text, settings, offset=i0 / sample_rate, decoder=d)
                words += ws
                oov_all += oov
                segments.append((float(a), float(min(b, duration)), text))
        else:  # .txt: align the whole text, cut utterances by their word counts
            text = " ".join(t for _, t in transcript.utterances)
            words, oov_all = align_words(x, text, settings, decoder=d)
            pos = 0
            for _, line in transcript.utterances:
                n = len([t for t in normalise(line) if d.lookup_word(t) is not None])
                chunk = words[pos : pos + n]
                pos += n
                if chunk:
                    segments.append((chunk[0].start, chunk[-1].end, line))
            if not segments:
                segments.append((0.0, duration, text))
        expected = sum(len(normalise(t)) for _, t in transcript.utterances)
        report.update({"out_of_vocabulary": oov_all, "expected_words": expected, "aligned_words": len(words)})
        if expected and not words:
            report["warning"] = "alignment returned no words (audio too short, silent or not this text?)"
    elif mode == "recognise":
        words = []
        level = 10 * np.log10(max(float(np.mean(x.astype(np.float64) ** 2)) if len(x) else 0.0, 1e-12))
        for w in (recognise_words(x, settings) if level >= settings.silence_db else []):
            span = x[int(w.start * sample_rate) : int(w.end * sample_rate)]
            level = 10 * np.log10(max(float(np.mean(span.astype(np.float64) ** 2)) if len(span) else 0.0, 1e-12))
            if level >= settings.silence_db:
                words.append(w)
        # utterances: split recognised words at pauses longer than pause_s
        cur: list[Word] = []
        for w in words:
            if cur and w.start - cur[-1].end > settings.pause_s:
                segments.append((cur[0].start, cur[-1].end, " ".join(c.word for c in cur)))
                cur = []
            cur.append(w)
        if cur:
            segments.append((cur[0].start, cur[-1].end, " ".join(c.word for c in cur)))
        probs = [w.prob for w in words]
        report.update({
            "recognised": True,
            "mean_word_posterior": float(np.mean(probs)) if probs else None,
            "reliability_note": "pocketsphinx's default English LM; recognition of this quality is rough "
            "(word error rates well above 50% on synthetic speech here): prefer a transcript",
        })
    else:
        raise ValueError(f"words mode must be auto, align or recognise, got {mode!r}")
    if not segments and duration > 0:
        segments.append((0.0, duration, ""))
    return words, segments, report


def pocketsphinx_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("pocketsphinx")
    except Exception:  # noqa: BLE001
        return None
