"""Codecs for a compressed clip store (issue 32): bytes per frame, encode/decode rate on one CPU core, and the loss
(PSNR, SSIM) of aligned face crops against the raw uint8 frames `clpau extract` writes today.

Candidates: raw (today), PNG (lossless), JPEG per frame at several qualities (PIL/libjpeg-turbo; what nvjpeg
decodes on a GPU), and H.264 per clip (PyAV/libx264, yuv420p, 16 frames a clip, every frame decodable only from its
clip's start). Frames: every frame of --videos videos drawn from each extract output given (synthetic and real).

    python bench/clip_codec.py [--clips data/clips/synth_pretrain data/clips/samples] [--videos 8]

Prints a markdown table and writes reports/clip_codec.json. One process, one thread (`OMP_NUM_THREADS=1`; x264's own
threads set to 1): rates are per core.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
from PIL import Image

from clpau.eval.swap_fidelity import ssim


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def image_codec(fmt: str, **opts):
    def encode(frames: np.ndarray) -> list[bytes]:
        out = []
        for f in frames:
            buf = io.BytesIO()
            Image.fromarray(f).save(buf, format=fmt, **opts)
            out.append(buf.getvalue())
        return out

    def decode(blobs: list[bytes]) -> np.ndarray:
        return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])

    return encode, decode


def h264_codec(crf: int, clip_len: int = 16):
    def encode(frames: np.ndarray) -> list[bytes]:
        out = []
        for start in range(0, len(frames), clip_len):
            buf = io.BytesIO()
            with av.open(buf, "w", format="mp4") as c:
                s = c.add_stream("libx264", rate=25)
                s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
                s.options = {"crf": str(crf), "preset": "medium", "threads": "1"}
                for i, f in enumerate(frames[start:start + clip_len]):
                    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuv420p")
                    vf.pts, vf.time_base = i, Fraction(1, 25)
                    for p in s.encode(vf):
                        c.mux(p)
                for p in s.encode():
                    c.mux(p)
            out.append(buf.getvalue())
        return out

    def decode(blobs: list[bytes]) -> np.ndarray:
        frames = []
        for b in blobs:
            with av.open(io.BytesIO(b)) as c:
                c.streams.video[0].thread_type, c.streams.video[0].thread_count = "SLICE", 1
                frames += [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        return np.stack(frames)

    return encode, decode


def raw_codec():
    return (lambda frames: [f.tobytes() for f in frames],
            lambda blobs: np.stack([np.frombuffer(b, np.uint8) for b in blobs]))


def load_frames(roots: list[Path], videos: int, seed: int) -> dict[str, np.ndarray]:
    """{source: (N, S, S, 3) uint8}: every frame of `videos` random videos of each extract output."""
    out = {}
    rng = np.random.default_rng(seed)
    for root in roots:
        clips = pd.read_parquet(root / "clips.parquet")
        shards = sorted(clips["shard"].unique())
        pick = rng.choice(len(shards), min(videos, len(shards)), replace=False)
        out[root.name] = np.concatenate([np.load(root / shards[i]) for i in sorted(pick)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=Path, nargs="+",
                    default=[Path("data/clips/synth_pretrain"), Path("data/clips/samples")])
    ap.add_argument("--videos", type=int, default=8, help="videos drawn from each extract output")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("reports/clip_codec.json"))
    args = ap.parse_args()
    codecs = {"raw uint8 (today)": raw_codec(), "PNG (lossless)": image_codec("PNG", compress_level=6)}
    for q in (75, 85, 90, 95):
        codecs[f"JPEG q{q}"] = image_codec("JPEG", quality=q)
    for crf in (18, 23):
        codecs[f"H.264 crf {crf}, 16-frame clips"] = h264_codec(crf)
    results = []
    for source, frames in load_frames(args.clips, args.videos, args.seed).items():
        for name, (encode, decode) in codecs.items():
            t0 = time.perf_counter()
            blobs = encode(frames)
            t1 = time.perf_counter()
            back = decode(blobs).reshape(frames.shape)
            t2 = time.perf_counter()
            step = max(1, len(frames) // 200)  # SSIM on every step-th frame
            row = {"source": source, "codec": name, "frames": len(frames), "size": frames.shape[1],
                   "bytes_per_frame": round(sum(map(len, blobs)) / len(frames)),
                   "encode_fps": round(len(frames) / (t1 - t0)), "decode_fps": round(len(frames) / (t2 - t1)),
                   "psnr": round(psnr(frames, back), 2),
                   "ssim": round(float(np.mean([ssim(a, b) for a, b in zip(frames[::step], back[::step],
                                                                                   strict=True)])), 4)}
            row["vs_raw"] = round(frames[0].nbytes / row["bytes_per_frame"], 1)
            results.append(row)
            print(f"{source:15s} {name:30s} {row['bytes_per_frame']:7d} B/frame ({row['vs_raw']:5.1f}x fewer), "
                  f"encode {row['encode_fps']:6d}/s, decode {row['decode_fps']:6d}/s, PSNR {row['psnr']:6.2f} dB, "
                  f"SSIM {row['ssim']:.4f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
