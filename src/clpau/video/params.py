"""`extract`: face detection, tracking, alignment and clip cutting (video/extract.py)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from clpau.core.params import _Section


class ExtractParams(_Section):
    inputs: list[Path] = [Path("data/external/videos")]
    out_dir: Path = Path("data/clips/samples")
    workers: int = Field(0, ge=0, description="processes; 0 = one per core")
    # aligned crop: eye centres land on (0.5 -/+ eye_distance/2, eye_y) * crop_size
    crop_size: int = Field(112, ge=32, le=512)
    eye_distance: float = Field(0.30, gt=0.05, lt=0.8)
    eye_y: float = Field(0.36, gt=0.1, lt=0.7)
    clip_len: int = Field(16, ge=2)
    clip_stride: int = Field(8, ge=1)
    # detection and tracking
    min_face_px: int = Field(80, ge=40, description="smallest face width (px, original frame) that is kept")
    detect_threshold: float = Field(0.0, ge=-1.0, le=2.0, description="dlib HOG score offset; higher = stricter")
    track_threshold: float = Field(-0.4, ge=-1.5, le=2.0,
                                   description="score offset that keeps a tracked face (hysteresis: looser than "
                                               "detect_threshold, only inside the tracking window)")
    roi_face_px: int = Field(100, ge=80, le=200, description="face width the tracking window is resized to")
    recheck_every: int = Field(24, ge=1, description="frames between full-frame scans for other faces")
    identity_threshold: float = Field(0.6, gt=0.0, lt=2.0, description="dlib face-descriptor distance: same person")
    # who is in the video (videos.parquet: descriptor, other_faces): dlib face descriptors on a few frames
    descriptor_every: int = Field(6, ge=1, description="kept face frames between descriptor samples")
    descriptor_samples: int = Field(4, ge=1, le=64, description="descriptors per video, at most, spread over its "
                                    "chunks (at least one each); as many of the other faces")
    max_side: int = Field(1280, ge=320, description="larger frames are downscaled to this long side first")
    shot_change: float = Field(0.5, gt=0.0, le=1.0, description="histogram distance that cuts a shot")
    max_jump: float = Field(0.5, gt=0.0, description="face-centre move per frame, in face widths, that cuts a clip")
    # work splitting: videos are cut at keyframes into chunks of about this many frames that run in parallel;
    # the split does not depend on the number of workers, so neither does the output
    chunk_frames: int = Field(240, ge=16)

    @model_validator(mode="after")
    def _check(self) -> ExtractParams:
        if self.clip_stride > self.clip_len:
            raise ValueError(f"clip_stride ({self.clip_stride}) must not exceed clip_len ({self.clip_len})")
        return self
