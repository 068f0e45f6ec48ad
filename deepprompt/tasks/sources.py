"""Where a task's splits are read from: ONE resolver for every task, driven by the class attributes
below (``split_files``, ``source_kind``, ``folder``, ``default_asset`` ...). ``task.<split>_file``
overrides it per split; every task's reader asks ``split_source``, so every task honours the
override alike. ``Task`` (``tasks/base.py``) inherits it."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from deepprompt import assets
from deepprompt.errors import ConfigError


class SplitSources:
    """The split-file resolution of ``Task``: it uses ``self.cfg`` (the TaskConfig), ``self.name``,
    ``self.splits`` and ``self._located`` (the splits whose source was asked for)."""

    split_files: ClassVar[dict[str, tuple[str, ...]]] = {}
    """Candidate names per split under ``task.data_dir``; the first that exists is read. Empty: a
    split's own name; a split not listed (when others are) is not one of the task's."""
    source_kind: ClassVar[str] = "any"
    """What a split's source under data_dir is: ``file``, ``dir`` or ``any`` (``source_exists``). A
    ``task.<split>_file`` must be a file for ``file`` tasks, anything that exists otherwise."""
    default_asset: ClassVar[str | None] = None
    """The fetched asset read when ``task.data_dir`` is not set (``make assets``)."""
    folder: ClassVar[str | None] = None
    """The official folder name: ``task.data_dir`` may be that folder or its parent."""
    data_dir_may_be_file: ClassVar[bool] = False
    """``task.data_dir`` may name one file that holds every split (wnut16's ``ner.txt``)."""
    SINGLE_FILE: ClassVar[str | None] = None
    """The name of that one file (last in ``split_files``): the splits are cut from it when data_dir
    has no file of its own for any split."""
    data_help: ClassVar[str] = ""
    """What the data directory holds, for the one-line errors (e.g. ``train/dev JSON``)."""
    needs_files: ClassVar[bool] = False
    """No default location: without ``task.data_dir`` each split needs ``task.<split>_file``."""

    def split_source(self, split: str) -> Path:
        """The file (or directory) the split is read from: ``task.<split>_file`` when set, else the
        task's ``default_source`` under ``task.data_dir``. Every task's reader asks here, so every
        task honours the override alike; ``build_features`` refuses an override the task's reader
        never asked for, so a task that forgets it fails in one line instead of ignoring it."""
        explicit = self.explicit_file(split)
        return explicit if explicit is not None else self.default_source(split)

    def split_names(self, split: str) -> tuple[str, ...]:
        if self.split_files and split not in self.split_files:
            raise ConfigError(f"task {self.name}: unknown split {split!r} (splits: {', '.join(self.splits)})")
        return self.split_files.get(split, (split,))

    def data_dir(self, split: str = "train") -> Path:
        """``task.data_dir`` (or its ``folder``), else the task's asset; one line naming the key otherwise."""
        if not self.cfg.data_dir:
            if self.default_asset is not None:
                return assets.require_asset(self.default_asset, "task.data_dir")
            if self.needs_files:
                raise ConfigError(f"task.{split}_file: task {self.name} needs task.{split}_file or task.data_dir")
            raise ConfigError(f"task.data_dir: task {self.name!r} needs a data directory"
                              + (f" ({self.data_help})" if self.data_help else ""))
        root = Path(self.cfg.data_dir)
        if not root.exists():
            raise ConfigError(f"task.data_dir: {root} does not exist")
        if not root.is_dir() and not self.data_dir_may_be_file:
            raise ConfigError(f"task.data_dir: {root} is not a directory")
        if (self.folder and root.is_dir() and (root / self.folder).is_dir()
                and not any(self._found(root / n) for n in self.split_names("train"))):
            root = root / self.folder
        return root

    def _found(self, path: Path) -> bool:
        """Whether ``path`` under data_dir is a source of this task's kind."""
        return {"file": path.is_file, "dir": path.is_dir}.get(self.source_kind, lambda: self.source_exists(path))()

    def missing_hint(self, split: str) -> str:
        """Added after the names looked for when none exists (e.g. "or SQuADShifts sets")."""
        return ""

    def default_source(self, split: str) -> Path:
        """The one of ``split_names(split)`` under data_dir (data_dir itself when it is a file); two of them
        (``train.jsonl`` and ``train.csv``) are refused, the one-file corpus aside."""
        root = self.data_dir(split)
        if root.is_file():
            return root
        names = self.split_names(split)
        own = [n for n in names if n != self.SINGLE_FILE and self._found(root / n)]
        if len(own) > 1:  # reading the first would quietly leave the other out: which one is meant is the user's say
            raise ConfigError(f"task.data_dir: {root} has both {own[0]} and {own[1]} for the {split} split of "
                              f"{self.name}; keep one there or name it with task.{split}_file")
        if own:
            return root / own[0]
        if self.SINGLE_FILE in names and self._found(root / self.SINGLE_FILE):  # last in names: no file of its own
            self._refuse_mixed_layout(root, split, names)
            return root / self.SINGLE_FILE
        if self.source_kind == "dir":
            raise ConfigError(f"task.data_dir: {root} has no {' or '.join(names)} directory ({self.data_help})")
        if len(names) == 1 and names[0] != split:
            raise ConfigError(f"task.data_dir: {root} has no {names[0]} (the {split} split of {self.name})")
        raise ConfigError(f"task.data_dir: {root} has no {split} {'file' if self.source_kind == 'file' else 'data'} "
                          f"(looked for {', '.join(names)}{self.missing_hint(split)}; or set task.{split}_file)")

    def _refuse_mixed_layout(self, root: Path, split: str, names: tuple[str, ...]) -> None:
        """A split cut from the one-file corpus while another split has a file of its own in data_dir
        would be a 10 % slice of a corpus that file may overlap: one line instead of that mix."""
        own = [n for s in self.split_files if s != split for n in self.split_names(s)
               if n != self.SINGLE_FILE and self._found(root / n)]
        if own:
            looked = ", ".join(n for n in names if n != self.SINGLE_FILE)
            raise ConfigError(f"task.data_dir: {root} has {own[0]} but no {split} file (looked for {looked}); the "
                              f"{split} split would be cut from {self.SINGLE_FILE}, the whole corpus: add the {split} "
                              f"file, set task.{split}_file, or keep only {self.SINGLE_FILE} there")

    def source_exists(self, path: Path) -> bool:
        """Whether ``task.<split>_file`` names something this task reads (``file`` tasks: a file;
        otherwise anything that exists)."""
        return path.is_file() if self.source_kind == "file" else path.exists()

    def explicit_file(self, split: str) -> Path | None:
        """``task.<split>_file`` when set (checked with ``source_exists``), else None."""
        self._located.add(split)
        value = getattr(self.cfg, f"{split}_file", None)
        if not value:
            return None
        path = Path(value)
        if not self.source_exists(path):
            if path.is_dir():
                raise ConfigError(f"task.{split}_file: {value} is a directory; task {self.name} reads a file")
            if path.exists():
                raise ConfigError(f"task.{split}_file: {value} is not something task {self.name} reads")
            raise ConfigError(f"task.{split}_file: {value} does not exist")
        return path
