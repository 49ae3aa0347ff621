"""Dockerfile and .dockerignore, checked without a Docker engine.

Every path the Dockerfile copies exists and is not excluded by .dockerignore;
the image leaves out devnet/, tests and benchmarks; EXPOSE matches the default
ports; ENTRYPOINT and HEALTHCHECK run scripts the image copies in; and the
build stage's ``pip install .`` works from exactly the files it copies (a wheel
is built from a copy of that context and must hold the packages and the
``tproxy`` command).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers.deploy import REPO, Instruction, dockerfile, image_env
from tproxy.config import DownstreamSettings, MonitoringSettings


def _copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context."""
    out = []
    for ins in dockerfile():
        if ins.keyword != "COPY" or "--from=" in ins.args:
            continue
        parts = [p for p in ins.args.split() if not p.startswith("--")]
        out.append((parts[:-1], parts[-1]))
    return out


def _stage_copies(stage: int) -> list[tuple[list[str], str]]:
    stages: list[list[Instruction]] = []
    for ins in dockerfile():
        if ins.keyword == "FROM":
            stages.append([])
        else:
            stages[-1].append(ins)
    out = []
    for ins in stages[stage]:
        if ins.keyword == "COPY" and "--from=" not in ins.args:
            parts = ins.args.split()
            out.append((parts[:-1], parts[-1]))
    return out


def _exec_form(ins: Instruction) -> list[str]:
    args = ins.args
    if ins.keyword == "HEALTHCHECK":
        args = args.split("CMD", 1)[1].strip()
    value = json.loads(args)
    assert isinstance(value, list)
    return [str(v) for v in value]


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a match on a parent directory excludes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pat in patterns:
        negate = pat.startswith("!")
        rx = _pattern_regex(pat.lstrip("!").strip("/"))
        if any(rx.fullmatch(p) for p in prefixes):
            result = not negate
    return result


def _tracked(source: str) -> list[str]:
    r = subprocess.run(["git", "ls-files", "--", source], cwd=REPO, capture_output=True, text=True, check=True)
    files = r.stdout.split()
    return files or [source]  # a new, not yet committed file: check the path itself


def test_dockerignore_matcher() -> None:
    pats = ["**/__pycache__", "data", "**/*.chdb", "tests"]
    assert ignored("tproxy/shares/__pycache__/x.pyc", pats)
    assert ignored("data/shares.chdb/part", pats) and ignored("x/y.chdb", pats)
    assert not ignored("tproxy/shares/spool.py", [*pats, "**/spool"])
    assert not ignored("tproxy/data.py", pats)


def test_copied_paths_exist_and_are_not_ignored() -> None:
    patterns = _dockerignore()
    for sources, _dest in _copies():
        for src in sources:
            assert (REPO / src).exists(), src
            for f in _tracked(src):
                assert not ignored(f, patterns), f"{f} is copied by the Dockerfile but excluded by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [".venv/bin/python", ".git/HEAD", "tproxy/__pycache__/cli.cpython-311.pyc", ".mypy_cache/x",
     ".ruff_cache/x", ".pytest_cache/x", "data/shares.chdb/store", "spool/seg-1", "farm.chdb",
     "tests/deploy/test_compose.py", "devnet/pool.py", "bench/bench_proxy.py", "tproxy.egg-info/PKG-INFO"],
)
def test_dockerignore_excludes(path: str) -> None:
    assert ignored(path, _dockerignore())


def test_image_leaves_out_dev_code() -> None:
    sources = {s.split("/")[0] for srcs, _ in _copies() for s in srcs}
    assert not sources & {"devnet", "tests", "bench", "scripts", ".venv"}
    assert {"sv2", "tproxy", "monitoring"} <= sources


def test_expose_matches_default_ports() -> None:
    (expose,) = [i for i in dockerfile() if i.keyword == "EXPOSE"]
    assert {int(p) for p in expose.args.split()} == {DownstreamSettings().port, MonitoringSettings().port}


def test_entrypoint_and_healthcheck_run_copied_scripts() -> None:
    final_copies = _stage_copies(-1)
    in_image: dict[str, str] = {}
    for sources, dest in final_copies:
        for src in sources:
            target = dest + Path(src).name if dest.endswith("/") else dest
            in_image[target] = src
    entry = _exec_form(next(i for i in dockerfile() if i.keyword == "ENTRYPOINT"))
    health = _exec_form(next(i for i in dockerfile() if i.keyword == "HEALTHCHECK"))
    assert entry[0] == health[0] == "python"
    assert in_image[entry[1]] == "docker/entrypoint.py"
    assert in_image[health[1]] == "docker/healthcheck.py"
    # The config the entry point reads is the one the image copies in.
    assert in_image[image_env()["TPROXY_CONFIG"]] == "config-examples/tproxy.toml"
    cmd = _exec_form(next(i for i in dockerfile() if i.keyword == "CMD"))
    assert cmd == ["run"]


@pytest.mark.slow
def test_build_stage_installs_from_its_copied_context(tmp_path: Path) -> None:
    # The build context as Docker sends it (the files on disk minus .dockerignore),
    # restricted to what the build stage copies.
    ctx = tmp_path / "ctx"
    patterns = _dockerignore()
    for sources, _dest in _stage_copies(0):
        for src in sources:
            files = [REPO / src] if (REPO / src).is_file() else sorted((REPO / src).rglob("*"))
            for f in files:
                rel = f.relative_to(REPO).as_posix()
                if f.is_file() and not ignored(rel, patterns):
                    (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, ctx / rel)
    wheels = tmp_path / "wheels"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ctx)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = wheels.glob("tproxy-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    for module in ("tproxy/cli.py", "tproxy/config.py", "tproxy/errors.py", "tproxy/sri_import.py",
                   "tproxy/runtime.py", "monitoring/api.py", "sv2/keys.py"):
        assert module in names, module
    assert not [n for n in names if n.startswith(("tests/", "devnet/", "bench/"))]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "tproxy = tproxy.cli:main" in zipfile.ZipFile(whl).read(entry_points).decode()
