"""Generate test videos whose frames say their own index, and read that index back.

Each frame carries its index as 16 black/white blocks across the top band, big enough to
survive scaling and lossy coding (x264, JPEG), so a test can tell exactly which source frame
an extracted frame came from. The rest of the frame is moving noise, so codecs do real work.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS = 16
BAND = 0.18  # share of the height taken by the index band


def scene_image(width: int, height: int, seed: int) -> np.ndarray:
    """Return a clip's own scene: a coarse random colour field, smoothly upsampled, so two
    clips' pictures differ the way two real videos' do (perceptual hashes far apart)."""
    from PIL import Image

    coarse = np.random.default_rng([seed, 0x5CE4E]).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    big = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.uint8)


def frame_image(
    index: int,
    width: int,
    height: int,
    rng: np.random.Generator,
    noise: int = 24,
    scene: np.ndarray | None = None,
) -> np.ndarray:
    """Return one RGB frame showing `index` in its top band over the clip's scene (if any),
    a moving gradient and noise."""
    img = np.empty((height, width, 3), np.uint8)
    band = max(8, int(height * BAND))
    # A smooth moving gradient plus noise below the band (noise keeps the encoder honest).
    x = np.arange(width, dtype=np.int32)
    grad = ((x + index * 4) % 256).astype(np.uint8)
    img[band:] = grad[None, :, None]
    noise = rng.integers(0, noise + 1, size=(height - band, width, 1), dtype=np.uint8)
    if scene is None:
        img[band:] = img[band:] // 2 + noise
    else:
        img[band:] = img[band:] // 16 + scene[band:] // 5 * 4 + noise  # <= 243: no wrap
    img[:band] = 0
    for bit in range(BITS):
        if index >> bit & 1:
            x0, x1 = bit * width // BITS, (bit + 1) * width // BITS
            img[:band, x0:x1] = 255
    return img


def read_index(rgb: np.ndarray) -> int:
    """Return the frame index drawn into an (H, W, 3) or (H, W) frame by `frame_image`."""
    gray = rgb.mean(axis=2) if rgb.ndim == 3 else rgb
    height, width = gray.shape
    y = int(height * BAND / 2)
    value = 0
    for bit in range(BITS):
        x = int((bit + 0.5) * width / BITS)
        if gray[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3].mean() > 128:
            value |= 1 << bit
    return value


def make_clip(
    path: Path,
    *,
    seconds: float = 2.0,
    fps: int = 30,
    width: int = 320,
    height: int = 240,
    gop: int = 50,
    first_index: int = 0,
    seed: int = 0,
    crf: int = 23,
    preset: str = "veryfast",
    noise: int = 24,
    audio: bool = False,
) -> Path:
    """Write an H.264 mp4 whose frame i shows index first_index + i; return its path."""
    rng = np.random.default_rng(seed)
    scene = scene_image(width, height, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = round(seconds * fps)
    # Fixed metadata, so the same arguments give the same bytes.
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # No scene-cut keyframes (GOPs stay exactly `gop`), no mb-tree and one thread: x264
        # is then bit-for-bit repeatable.
        stream.options = {
            "crf": str(crf),
            "g": str(gop),
            "keyint_min": str(gop),
            "preset": preset,
            "sc_threshold": "0",
            "x264-params": "mbtree=0",
            "threads": "1",
        }
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=16000, layout="mono")
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(
                frame_image(first_index + i, width, height, rng, noise, scene)
            )
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if sound is not None:
            samples = int(seconds * 16000)
            tone = (np.sin(np.arange(samples) / 8) * 3000).astype(np.int16)[None, :]
            aframe = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
            aframe.sample_rate = 16000
            out.mux(sound.encode(aframe))
            out.mux(sound.encode())
    return path


# A small camera folder for the demo: <camera>/<label>/<YYYYmmdd_HHMMSS>.mp4, plus the kinds
# of files a real import meets (a name that does not match, a copy of one video).
FOLDER = (
    ("lobby", "person", "20240501_120000", 1),
    ("lobby", "person", "20240501_121500", 2),
    ("lobby", "animal", "20240502_063000", 3),
    ("gate", "vehicle", "20240501_080000", 4),
    ("gate", "vehicle", "20240501_081000", 5),
    ("gate", "person", "20240503_170000", 6),
)


def make_folder(root: Path) -> Path:
    """Write the demo's video folder under root (deterministic); return root."""
    root = Path(root)
    for camera, label, stamp, seed in FOLDER:
        make_clip(
            root / camera / label / f"{stamp}.mp4",
            seconds=2,
            fps=10,
            width=96,
            height=64,
            seed=seed,
        )
    make_clip(root / "gate" / "notes" / "unnamed-clip.mp4", seconds=1, fps=10, width=96, height=64)
    copy = root / "gate" / "person" / "20240503_170500.mp4"  # the same bytes as another file
    copy.write_bytes((root / "gate" / "person" / "20240503_170000.mp4").read_bytes())
    return root


def main(argv=None) -> int:
    """Write the demo's video folder: `python -m standins.video folder --root DIR`."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m standins.video", description=__doc__)
    ap.add_argument("command", choices=["folder"])
    ap.add_argument("--root", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.root.exists():
        print(f"{args.root} exists: kept as it is")
        return 0
    tmp = args.root.with_name(args.root.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    make_folder(tmp)
    tmp.rename(args.root)  # a half-written folder never takes the input's name
    print(f"wrote {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
