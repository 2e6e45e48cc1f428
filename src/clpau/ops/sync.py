"""git + DVC plumbing of the retraining loop: version a change, and share it through the remotes.

The ingest side and the training side (a GPU worker) are two checkouts of one repo: git carries code, params,
dvc.lock and the `.dvc` pointers (through the git remote named by `flows.git_remote`; null = git is left alone);
the DVC remote (`.dvc/config`: a local folder by default, `dvc remote add` for S3/GCS) carries videos, clips and
models. Every function here is a no-op where its remote is not configured, so one machine works without any.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ENV = {"DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"}


class SyncError(RuntimeError):
    """A git or DVC command failed; the message holds its output."""


def run(ws: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=ws, capture_output=True, text=True, env={**os.environ, **ENV})
    if check and proc.returncode != 0:
        raise SyncError(f"`{' '.join(cmd)}` failed in {ws}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


def is_git(ws: Path) -> bool:
    return run(ws, "git", "rev-parse", "--is-inside-work-tree", check=False).returncode == 0


def git_remote(ws: Path, name: str | None) -> str | None:
    """`name` when the checkout has a git remote of that name (flows.git_remote; None: git is not synced)."""
    if not name or not is_git(ws):
        return None
    if run(ws, "git", "remote", "get-url", name, check=False).returncode != 0:
        raise SyncError(f"flows.git_remote is {name!r} but {ws} has no git remote of that name (`git remote -v`)")
    return name


def dvc_remote(ws: Path) -> str | None:
    """The default DVC remote's name, if one is set."""
    out = run(ws, "dvc", "remote", "default", check=False).stdout.strip()
    return out or None


def commit(ws: Path, paths: list[str], message: str) -> str | None:
    """`git add PATHS && git commit`; the new commit's hash, or None when nothing changed (or no git)."""
    if not is_git(ws):
        return None
    run(ws, "git", "add", "--", *paths)
    if run(ws, "git", "diff", "--cached", "--quiet", check=False).returncode == 0:
        return None
    run(ws, "git", "commit", "-q", "-m", message)
    return head(ws)


def head(ws: Path) -> str | None:
    proc = run(ws, "git", "rev-parse", "HEAD", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def pull(ws: Path, remote: str | None = None) -> list[str]:
    """Bring the checkout up to its remotes: `git pull --ff-only REMOTE`, then `dvc pull` (data and models).
    Returns what ran."""
    done = []
    if git_remote(ws, remote):
        run(ws, "git", "pull", "-q", "--ff-only", remote, current_branch(ws))
        done.append("git pull")
    if dvc_remote(ws):
        run(ws, "dvc", "pull", "-q")
        done.append("dvc pull")
    return done


def push(ws: Path, remote: str | None = None, targets: list[str] | None = None,
         experiment: str | None = None) -> list[str]:
    """`dvc push [TARGETS]`, `git push REMOTE`, and the DVC experiment's ref when named. Returns what ran."""
    done = []
    if dvc_remote(ws):
        run(ws, "dvc", "push", "-q", *(targets or []))
        done.append("dvc push")
    if git_remote(ws, remote):
        run(ws, "git", "push", "-q", remote, f"HEAD:{current_branch(ws)}")
        done.append("git push")
        if experiment:
            run(ws, "dvc", "exp", "push", remote, experiment)
            done.append(f"dvc exp push {experiment}")
    return done


def current_branch(ws: Path) -> str:
    return run(ws, "git", "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
