"""The wheel installs one namespace, `ttscale.`, so a user's own `models` or `tasks` never collides.

The repository keeps `configs/ flows/ tasks/ models/ warehouse/` at its top (the design's map);
pyproject's package-dir installs them as `ttscale.configs`, ... This test builds the real wheel and
installs it, without dependencies (it only looks; nothing of ours but `ttscale` is imported), into
a fresh venv, then asks that venv's interpreter (run outside the checkout, so the working
directory cannot answer for it) what it can import.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("configs", "flows", "tasks", "models", "warehouse")


def _source_copy(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked and untracked, not ignored), copied out, so
    the build's `build/` and `*.egg-info` land in tmp and never in the working tree."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, check=True, capture_output=True, timeout=60,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def test_wheel_installs_only_the_ttscale_namespace(tmp_path: Path) -> None:
    source = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        check=True, cwd=tmp_path, timeout=300,
    )
    (wheel,) = dist.glob("ttscale-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"ttscale"}, f"the wheel installs top-level {sorted(top)}"
    for folder in FOLDERS:
        assert f"ttscale/{folder}/__init__.py" in names
    assert "ttscale/configs/tiny.yaml" in names and "ttscale/warehouse/schema.sql" in names

    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    probe = (
        "import importlib.util as u, sys; "
        f"tops = [n for n in {FOLDERS!r} if u.find_spec(n) is not None]; "
        "assert not tops, f'top-level modules after install: {tops}'; "
        f"[print(u.find_spec('ttscale.' + n).origin) for n in {FOLDERS!r}]"
    )
    out = subprocess.run([python, "-I", "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    site = str(env)
    assert all(line.startswith(site) for line in out.stdout.split()), out.stdout
