"""Clip views: one augmentation per view and clip, plus a small shift per frame (hides alignment jitter)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from clpau.data.augment import LUMA, colour_jitter
from clpau.data.datasets import ClipDataset


def _one_still_clip(tmp_path, frames: int = 8):
    rng = np.random.default_rng(0)
    still = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    np.save(tmp_path / "faces.npy", np.repeat(still[None], frames, 0))
    pd.DataFrame({"clip_id": ["a", "b"], "identity": ["A", "B"], "n_frames": [frames, frames],
                  "shard": ["faces.npy", "faces.npy"], "start_row": [0, 0]}).to_parquet(tmp_path / "clips.parquet")


def test_frames_of_a_still_clip_differ_only_by_the_per_frame_shift(tmp_path):
    _one_still_clip(tmp_path)
    plain = ClipDataset([tmp_path], clip_len=8, size=32, frame_jitter=0.0)[0]["view_q"]
    assert all(torch.equal(plain[0], f) for f in plain)  # one augmentation for the whole view
    jittered = ClipDataset([tmp_path], clip_len=8, size=32, frame_jitter=0.06)[0]["view_q"]
    assert sum(not torch.equal(jittered[0], f) for f in jittered[1:]) >= 5
    # the shift is geometric only: colour statistics of the frames stay those of one augmentation
    means = jittered.mean((1, 2, 3))
    assert float(means.max() - means.min()) < 0.1 * float(jittered.std())



def _colour_one_op_at_a_time(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """colour_jitter as defined, one step after another."""
    b, c, s = rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3)
    luma = torch.tensor(LUMA)[:, None, None]
    grey = (x * luma).sum(1, keepdim=True)
    x = grey + (x - grey) * s  # saturation
    mean = x.mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * c + mean) * b  # contrast, brightness
    if rng.random() < 0.1:
        x = (x * luma).sum(1, keepdim=True).expand_as(x)
    if rng.random() < 0.3:
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
        x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    return x.clamp(0, 1)


def test_the_one_pass_colour_jitter_is_the_step_by_step_one():
    x = torch.rand(4, 3, 24, 24).contiguous(memory_format=torch.channels_last)
    greys = blurs = 0
    for seed in range(80):
        want = _colour_one_op_at_a_time(x, np.random.default_rng(seed))
        got = colour_jitter(x.clone(), np.random.default_rng(seed))
        assert torch.allclose(got, want, atol=1e-5), seed
        # with the normalisation folded in, written into a given tensor
        out = torch.empty(4, 3, 24, 24)
        normalised = colour_jitter(x.clone(), np.random.default_rng(seed), mean=0.5, std=0.25, out=out)
        assert normalised.data_ptr() == out.data_ptr()
        assert torch.allclose(normalised, (want - 0.5) / 0.25, atol=4e-5), seed
        draws = np.random.default_rng(seed).random(5)  # b, c, s, then the greyscale and blur coins
        greys, blurs = greys + (draws[3] < 0.1), blurs + (draws[4] < 0.3)
    assert greys and blurs  # both rare branches were compared


def test_a_loaded_batch_holds_each_clip_where_its_own_item_would(synth_clips):
    # the loader assembles batches in place (ClipDataset.__getitems__); each position must hold its own clip's
    # views and identity exactly as that clip's item alone
    from clpau.train.sampling import epoch_loader

    ds = ClipDataset([synth_clips], clip_len=4, size=32, frame_jitter=0.03)
    ds.set_epoch(2)
    batch = next(iter(epoch_loader(ds, 5, 0, seed=1, epoch=2)))  # the batch carries its epoch: items follow set_epoch
    assert batch["view_q"].shape == (5, 4, 3, 32, 32)
    assert len(set(batch["clip_id"].tolist())) == 5 and batch["index"] == batch["clip_id"].tolist()
    for n, i in enumerate(batch["clip_id"].tolist()):
        item = ds[i]
        for key in ("view_q", "view_k", "identity"):
            assert torch.equal(batch[key][n], item[key]), key
    assert not torch.equal(batch["view_q"], batch["view_k"])  # two augmentations


def test_swap_partners_are_other_people_and_follow_the_epoch(synth_clips):
    ds = ClipDataset([synth_clips], clip_len=4, size=32, frame_jitter=0.03)
    indices = list(range(len(ds)))
    ds.set_epoch(3)
    views = ds.__getitems__(indices)
    others = ds.others(indices)
    assert others.shape == (len(ds), 3, 32, 32)
    # each partner frame is one of another identity's frames: compare it with every clip's first frame, unaugmented
    plain = ClipDataset([synth_clips], clip_len=4, size=32, augment=False)
    firsts = plain.__getitems__(indices)["view_q"][:, 0]
    ds.augment = False
    unaugmented = ds.others(indices)
    for i, frame in enumerate(unaugmented):
        owners = [j for j in indices if torch.equal(frame, firsts[j])]
        assert owners and all(ds.identity[j] != ds.identity[i] for j in owners), i
    ds.augment = True
    # the same partners and augmentations again in the same epoch (a resumed run), others in the next; asking for
    # them leaves the views' own random stream alone
    assert torch.equal(ds.others(indices), others)
    assert torch.equal(ds.__getitems__(indices)["view_q"], views["view_q"])
    ds.set_epoch(4)
    assert not torch.equal(ds.others(indices), others)


def test_views_coloured_on_the_trainer_are_those_the_loader_colours(synth_clips):
    # colour_on: trainer — the loader sends uint8 crops and each view's colour draw; `finish_views` colours the
    # whole batch at once where the batch is (a GPU). Same draws, same views, up to float rounding.
    from clpau.data.augment import finish_views

    indices = list(range(20))  # every clip of the fixture
    for augment in (True, False):
        host = ClipDataset([synth_clips], clip_len=4, size=32, frame_jitter=0.03, augment=augment)
        crops = ClipDataset([synth_clips], clip_len=4, size=32, frame_jitter=0.03, augment=augment,
                            colour_on_host=False)
        for ds in (host, crops):
            ds.set_epoch(1)
        want, got = host.__getitems__(indices), crops.__getitems__(indices)
        assert got["view_q"].dtype == torch.uint8 and got["colour_q"].shape == (20, 14)
        assert got["view_q"].nbytes * 4 == want["view_q"].nbytes
        q, k = finish_views(got)
        assert torch.allclose(q, want["view_q"], atol=1e-5) and torch.allclose(k, want["view_k"], atol=1e-5)
        assert finish_views(want)[0] is want["view_q"]  # coloured by the loader: passed on as it is
        if augment:  # the batch held views with and without the blur, so both of its branches were compared
            assert 0 < int((got["colour_q"][:, 13] > 0).sum()) < 20


def test_views_cropped_on_the_trainer_are_close_to_those_the_loader_crops(synth_clips):
    # crop_on: trainer — the loader sends each clip's frames once with both views' crop boxes and colour draws;
    # `finish_views` crops by bilinear sampling on the batch's device. Same draws; the loader's resize rounds to
    # uint8 and replicates the crop's edge where the sampler reads the pixels beyond it, so close, not equal.
    from clpau.data.augment import finish_views

    indices = list(range(20))
    for size, mean_within in ((112, 0.005), (56, 0.02)):  # the crops' own scale (S0 = 112), and shrunk 1.7-2x
        host = ClipDataset([synth_clips], clip_len=4, size=size, frame_jitter=0.03)
        frames = ClipDataset([synth_clips], clip_len=4, size=size, frame_jitter=0.03, colour_on_host=False,
                             crop_on_host=False)
        for ds in (host, frames):
            ds.set_epoch(1)
        want, got = host.__getitems__(indices), frames.__getitems__(indices)
        assert "view_q" not in got and got["frames"].shape == (20, 4, 112, 112, 3)
        assert got["crop_q"].shape == (20, 4, 3) and not torch.equal(got["crop_q"], got["crop_k"])
        for key, view in zip(("view_q", "view_k"), finish_views(got, size), strict=True):
            assert view.shape == want[key].shape
            inner = (view - want[key]).abs()[..., 2:-2, 2:-2]
            assert float(inner.mean()) < mean_within, (size, key, float(inner.mean()))
            if size == 112:  # 1:1 or enlarged: only the loader's rounding to uint8, times the colour's gain
                assert float(inner.max()) < 0.05
    with pytest.raises(ValueError, match="colour jitter there too"):
        ClipDataset([synth_clips], clip_len=4, size=32, crop_on_host=False)


def test_track_reach_follows_overlapping_clips_of_one_track_and_stops_at_a_cut():
    import pandas as pd

    from clpau.data.clips import track_reach

    # one shard: a track of frames 0-39 at rows 0-39 (clips at 0, 8, 16, 24), then after a cut a second track of
    # frames 40-63 at rows 40-63 whose first clip merely touches the first track's last one; a clip of another shard
    clips = pd.DataFrame({
        "shard_path": ["a"] * 4 + ["a"] * 2 + ["b"],
        "start_frame": [0, 8, 16, 24, 40, 48, 0],
        "start_row": [0, 8, 16, 24, 40, 48, 0],
        "n_frames": [16] * 7})
    assert track_reach(clips).tolist() == [40, 32, 24, 16, 24, 16, 16]
    # a row missing between the 2nd and 3rd clip (rows no longer step with frames there): two tracks
    shifted = clips.assign(start_row=[0, 8, 17, 25, 41, 49, 0])
    assert track_reach(shifted).tolist() == [24, 16, 24, 16, 24, 16, 16]
    # the same clips listed twice (bench/gpu_pack.py lists each person again as other people on the same frames):
    # each copy reaches as far as the original; interleaved copies once broke every chain at its first clip
    twice = pd.concat([clips, clips], ignore_index=True).sample(frac=1.0, random_state=0)
    assert track_reach(twice).tolist() == track_reach(clips)[twice.index % len(clips)].tolist()
