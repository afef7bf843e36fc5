"""Small generated media for the extraction tests and the speed benchmark (no real recordings exist here).

tests/data/speech.wav: espeak-ng -v en-us -s 140 "the quick brown fox jumps over the lazy dog", converted
with sox to 16 kHz mono 16-bit and padded with 0.3 s of silence at both ends (4.25 s; transcript in
speech.txt). tests/data/face.jpg: the face of skimage.data.astronaut() (NASA, public domain), cropped to
100 x 100. Videos are made from them here, at test time, with PyAV (mpeg4 video + aac audio in .mp4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
SPEECH = DATA / "speech.wav"
FACE = DATA / "face.jpg"
SENTENCE = "the quick brown fox jumps over the lazy dog"


def speech() -> np.ndarray:
    import soundfile as sf

    x, sr = sf.read(SPEECH, dtype="float32")
    assert sr == 16000
    return x


def write_wav(path, x, sr=16000):
    import soundfile as sf

    sf.write(str(path), np.asarray(x, np.float32), sr, subtype="PCM_16")
    return Path(path)


def make_video(path, n_frames=50, fps=25, face_frames=None, audio=None, size=(160, 120), sr=16000):
    """An .mp4 with the face moving and scaling over the frames where ``face_frames`` is True (default all)
    on a grey background, and ``audio`` (mono float at ``sr``) as an aac track when given."""
    import av
    import cv2

    face = cv2.imread(str(FACE))
    face_frames = np.ones(n_frames, bool) if face_frames is None else np.asarray(face_frames, bool)
    W, H = size
    container = av.open(str(path), "w")
    vs = container.add_stream("mpeg4", rate=fps)
    vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
    vs.bit_rate = 800_000
    as_ = None
    if audio is not None:
        as_ = container.add_stream("aac", rate=sr)
        as_.layout = "mono"
    for i in range(n_frames):
        img = np.full((H, W, 3), 110, np.uint8)
        if face_frames[i]:
            s = 0.8 + 0.12 * np.sin(i / 7.0)
            f = cv2.resize(face, None, fx=s, fy=s)
            fh, fw = f.shape[:2]
            x0 = int(10 + (W - fw - 20) * (0.5 + 0.5 * np.sin(i / 9.0)))
            y0 = int((H - fh) / 2)
            img[y0 : y0 + fh, x0 : x0 + fw] = f
        frame = av.VideoFrame.from_ndarray(img, format="bgr24")
        for packet in vs.encode(frame):
            container.mux(packet)
    for packet in vs.encode():
        container.mux(packet)
    if as_ is not None:
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        step = 1024
        for k in range(0, len(pcm), step):
            chunk = pcm[k : k + step]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
            af.sample_rate = sr
            af.pts = k
            for packet in as_.encode(af):
                container.mux(packet)
        for packet in as_.encode():
            container.mux(packet)
    container.close()
    return Path(path)
