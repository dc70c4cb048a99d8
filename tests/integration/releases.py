"""Earlier releases of Mailstead as runnable trees, for the upgrade tests: each release's
``src`` taken out of git at its commit, with a virtual environment that imports that tree and,
where the release asks for nothing newer, this checkout's installed dependencies.

Built once per release under ``.cache/releases/`` (``make test`` keeps it between runs; a clean
clone builds it again in a second or two, with no network unless the release needs packages
the test environment lacks). Kept free of pytest so a benchmark could use it too.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import site
import subprocess
import sys
import tarfile
import tomllib
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from helpers import REPO, Runtime
from packaging.requirements import Requirement

RELEASES_FILE = Path(__file__).with_name("releases.txt")
CACHE = Path(os.environ.get("MAILSTEAD_RELEASE_CACHE", REPO / ".cache" / "releases"))


class ReleaseError(RuntimeError):
    """An earlier release could not be taken out of git or set up."""


@dataclass(frozen=True)
class Release:
    tag: str
    commit: str


def releases() -> list[Release]:
    """The releases of releases.txt, oldest first."""
    found: list[Release] = []
    for line in RELEASES_FILE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            tag, commit = line.split()
            found.append(Release(tag, commit))
    return found


def _git(*args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(["git", "-C", str(REPO), *args], input=stdin, capture_output=True,
                          check=False, timeout=120)
    if proc.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def _have_commit(commit: str) -> bool:
    try:
        _git("cat-file", "-e", f"{commit}^{{commit}}")
    except ReleaseError:
        return False
    return True


def _source_tree(release: Release, into: Path) -> None:
    """Unpacks the release's ``src`` and ``pyproject.toml`` (git archive: no work tree, no
    index, so it cannot disturb this checkout or its other worktrees)."""
    if not _have_commit(release.commit):
        # A shallow clone lacks old history: ask the remote for the tag once.
        with contextlib.suppress(ReleaseError):
            _git("fetch", "--quiet", "origin", "tag", release.tag)
    if not _have_commit(release.commit):
        raise ReleaseError(f"{release.tag} ({release.commit[:12]}) is not in this clone's "
                           "history: clone with full history (git fetch --unshallow --tags)")
    data = _git("archive", "--format=tar", release.commit, "src", "pyproject.toml")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(into, filter="data")


def _missing_requirements(tree: Path) -> list[str]:
    """The release's dependencies that this interpreter's environment does not satisfy."""
    project = tomllib.loads((tree / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    missing: list[str] = []
    for text in project.get("dependencies", []):
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if not req.specifier.contains(version, prereleases=True):
            missing.append(text)
    return missing


def _build(release: Release, target: Path) -> None:
    work = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tree = work / "tree"
        tree.mkdir(parents=True)
        _source_tree(release, tree)
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                       capture_output=True, timeout=120)
        python = venv / "bin" / "python"
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True, timeout=60).stdout.strip()
        missing = _missing_requirements(tree)
        if missing:
            # The release needs packages this environment lacks: they go into its own venv,
            # which comes first on its path.
            subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                            "--quiet", *missing], check=True, timeout=900)
        # The release's tree first, then the packages of the test environment. A .pth line
        # is a plain path: the test venv's own .pth files (this checkout's editable install)
        # are not read from there, so the new code can never shadow the old. The paths are
        # the final ones, after the rename below.
        lines = [str(target / "tree" / "src"), *site.getsitepackages()]
        Path(purelib, "mailstead-release.pth").write_text("\n".join(lines) + "\n")
        (work / "ready").write_text(f"{release.tag} {release.commit}\n")
        try:
            work.rename(target)
        except OSError:
            if not (target / "ready").exists():  # another worker won the race: keep its copy
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def runtime(release: Release) -> Runtime:
    """The release as a Runtime, built into the cache the first time."""
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    target = CACHE / f"{release.tag}-{release.commit[:12]}-{tag}"
    if not (target / "ready").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        _build(release, target)
    return Runtime(python=str(target / "venv" / "bin" / "python"), src=target / "tree" / "src")
