"""The run-config sections: typed dataclasses, each field's docstring its documentation
(``docs/config.md`` is generated from them), each section's ``check`` its value checks.

The defaults ARE the embedded default run: P-Tuning v2 (prefix) on all-MiniLM-L6-v2 for WNUT-16 NER.
The DeepSpeed JSON owns ZeRO, precision and micro-batching; this file owns everything else, and the
DeepSpeed JSON's ``"auto"`` values are filled from here (see ``engine/ds_setup.py``).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from deepprompt.errors import ConfigError


@dataclass
class ModelConfig:
    path: str = "all-minilm-l6-v2"
    """A local directory with config.json (+ tokenizer) or a GLM directory (glm_config.json,
    docs/glm.md), a preset name (``python -m deepprompt list backbones``), or a hub name when online."""
    family: str = "auto"
    """Backbone adapter family; ``auto`` picks it from the checkpoint's ``model_type``."""

    def check(self) -> None:
        if not self.path:
            raise ConfigError("model.path: must not be empty")


@dataclass
class PromptConfig:
    method: str = "prefix"
    """finetune | prompt (Lester) | ptuning (P-Tuning v1) | prefix (P-Tuning v2)."""
    length: int = 16
    """Number of prompt tokens P (input prompt length, or prefix length per layer)."""
    reparam: bool = False
    """prefix: produce the prefix through Embedding(P,h) -> Linear(h,r) -> tanh -> Linear(r, L*2*h)."""
    reparam_hidden: int = 512
    """prefix: the reparameterisation's hidden size r."""
    reparam_lr_scale: float = 0.01
    """prefix with reparam: the MLP trains at train.lr x this (the prefix embedding and the heads at
    train.lr). Adam moves every weight by about the learning rate per step and each prefix value sums
    r of them, so at one rate the MLP's prefix can move up to r times faster than a raw one: on WNUT-16 at
    lr 1e-2, r = 512, scale 1 and 0.2 blew the prefix up and gave F1 0, 0.05 and 0.01 trained
    (docs/benchmarks.md, "Reparameterisation")."""
    dropout: float = 0.1
    """Dropout applied to the prompt/prefix before it enters the backbone."""
    layers: list[int] | None = None
    """prefix: layers that get a prefix ("prompt depth"); None = every layer; negative indices
    count from the top (e.g. [-4,-3,-2,-1] = the top four layers)."""
    encoder_hidden: int | None = None
    """ptuning: hidden size of the bi-LSTM + MLP prompt encoder (default: the backbone's hidden)."""
    init_from: str | None = None
    """An artifact directory (e.g. a multi-task stage-1 run's ``output_dir/artifact``): a fresh run
    starts its prompt from exactly those tensors (MPT-2 stage 2). Method, prompt shape and backbone
    must match the artifact's; None = a fresh random prompt."""
    init_head: bool = False
    """With init_from: also start each task's head from the artifact's head of the same task name
    (labels must match); tasks without one keep a fresh head."""

    def check(self) -> None:
        if self.length < 0:
            raise ConfigError(f"prompt.length: must be >= 0, got {self.length}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"prompt.dropout: must be in [0, 1), got {self.dropout}")
        if self.reparam_hidden <= 0:
            raise ConfigError(f"prompt.reparam_hidden: must be > 0, got {self.reparam_hidden}")
        if self.encoder_hidden is not None and self.encoder_hidden <= 0:
            raise ConfigError(f"prompt.encoder_hidden: must be > 0 (or null for the backbone's hidden size), got "
                              f"{self.encoder_hidden}")
        if not 0.0 < self.reparam_lr_scale < float("inf"):
            raise ConfigError(f"prompt.reparam_lr_scale: must be a finite number > 0, got {self.reparam_lr_scale}")
        if self.method != "finetune" and self.length < 1:
            raise ConfigError(f"prompt.length: must be >= 1 for method {self.method!r}, got {self.length}")
        if self.layers is not None and not self.layers:
            raise ConfigError("prompt.layers: must name at least one layer (or be null for every layer)")
        if self.layers is not None and len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"prompt.layers: duplicate layer indices in {self.layers}")
        if self.init_head and not self.init_from:
            raise ConfigError("prompt.init_head: needs prompt.init_from (the artifact to take the heads from)")


@dataclass
class TaskConfig:
    name: str = "wnut16"
    """A registered task (``python -m deepprompt list tasks``)."""
    data_dir: str | None = None
    """Directory with the task's files in their official format; None = the task's default
    location (for wnut16: the fetched asset, ``make assets``)."""
    max_seq_length: int = 128
    """Sub-word tokens per example, special tokens included (the prompt is not counted). Words cut off
    are scored as predicted ``O`` and counted in the log. Checked at start-up against the
    backbone's positions, for every method."""
    head_dropout: float = 0.1
    """Dropout on the backbone states before the task head."""
    formulation: str = "classification"
    """SuperGLUE/GLUE sentence tasks: ``classification`` (a linear head on the first token) or
    ``cloze`` (the input is put in a pattern with the tokenizer's mask token and the parameter-free
    ``cloze`` head scores one single-token verbalizer per label there, GLM's SuperGLUE format;
    patterns and verbalizers in docs/tasks.md). Other tasks accept only ``classification``."""
    max_train_examples: int | None = None
    """Use only the first N training examples (quick experiments; logged): whole examples, e.g. a QA
    question with all its windows; None = all."""
    train_file: str | None = None
    """The training file (or CoNLL-2012 directory), instead of the task's default name under data_dir.
    Every task honours ``train_file``/``dev_file``/``test_file``; with all the splits it uses set,
    data_dir is not needed."""
    dev_file: str | None = None
    """The dev file (or directory), instead of the task's default name under data_dir."""
    test_file: str | None = None
    """The test file (or directory), instead of the task's default name under data_dir (e.g. CoNLL-2005
    ``test.brown``)."""
    folds: int | None = None
    """k-fold re-split for small data (``deepprompt sweep --folds k``): every labelled example of the
    task's train, dev and test splits is pooled, shuffled with a fixed seed and cut into k parts; fold
    ``task.fold`` holds out its part, the first half as dev and the second as test, and trains on the
    other k-1 parts (k=5: 80/10/10; over the k folds every example is held out exactly once). A label
    set read from the data (task.labels unset) comes from all the pooled splits. None = the task's
    own splits."""
    fold: int = 0
    """With task.folds: which fold (0 .. folds-1)."""
    options: dict = field(default_factory=dict)
    """(no key of its own) The task family's own keys, given as ``task.<key>`` like the keys above
    (e.g. qa's ``task.doc_stride``): typed, defaulted and checked by the task class (``Task.Options``,
    at start-up in ``engine/preflight.check_names``); this file knows no task family."""

    OPEN_KEYS: ClassVar[str] = "options"
    """Keys that are not fields go to ``options`` (``loading._build``) instead of being refused here."""

    def to_dict(self) -> dict:
        """The section as given: its fields, and the family's keys beside them (not nested)."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "options"}
        return {**out, **copy.deepcopy(self.options)}

    def check(self, prefix: str = "task.") -> None:
        """``prefix``: ``tasks[i].`` for an entry of a multi-task run, so the message names its key."""
        if self.max_seq_length < 8:
            raise ConfigError(f"{prefix}max_seq_length: must be >= 8, got {self.max_seq_length}")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ConfigError(f"{prefix}head_dropout: must be in [0, 1), got {self.head_dropout}")
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise ConfigError(f"{prefix}max_train_examples: must be >= 1 (or null for all), got {self.max_train_examples}")
        if self.formulation not in ("classification", "cloze"):
            raise ConfigError(f"{prefix}formulation: must be classification or cloze, got {self.formulation!r}")
        if self.folds is not None and self.folds < 2:
            raise ConfigError(f"{prefix}folds: must be >= 2 (or null for the task's own splits), got {self.folds}")
        if not 0 <= self.fold < (self.folds or 1):
            raise ConfigError(f"{prefix}fold: must be in 0..{(self.folds or 1) - 1} ({prefix}folds={self.folds}), got {self.fold}")


def _task_config_init(init):
    """``TaskConfig(name=..., doc_stride=16)``: keyword arguments that are not fields are family keys
    (``options``), as in a config file."""
    def __init__(self, *args, options: dict | None = None, **kwargs):
        names = {f.name for f in dataclasses.fields(TaskConfig)}
        family = {k: kwargs.pop(k) for k in list(kwargs) if k not in names}
        init(self, *args, options={**(options or {}), **family}, **kwargs)
    return __init__


TaskConfig.__init__ = _task_config_init(TaskConfig.__init__)


LEGACY_TASK_DEFAULTS = {"labels": None, "text_column": "text", "text_pair_column": None, "label_column": "label",
                       "word_column": 0, "tag_column": -1, "max_eval_examples": None, "doc_stride": 32,
                       "max_query_length": 64, "max_answer_length": 30, "n_best": 20, "train_files": None}
"""The family keys every task section carried (at these defaults) before they moved to the task
classes: a saved run config (an artifact, a checkpoint's signature) drops them where they hold
these values, so what older versions wrote still loads and resumes."""


def without_legacy_defaults(task: dict) -> dict:
    """A saved task section without the family keys at their old defaults (``LEGACY_TASK_DEFAULTS``)."""
    return {k: v for k, v in task.items() if not (k in LEGACY_TASK_DEFAULTS and v == LEGACY_TASK_DEFAULTS[k])}


def flat_without_legacy_defaults(flat: dict) -> dict:
    """``without_legacy_defaults`` of a flattened config (``task.doc_stride``, ``tasks[1].n_best``: a
    checkpoint's signature)."""
    return {k: v for k, v in flat.items()
            if not (k.startswith(("task.", "tasks[")) and (key := k.rsplit(".", 1)[-1]) in LEGACY_TASK_DEFAULTS
                    and v == LEGACY_TASK_DEFAULTS[key])}


@dataclass
class TrainConfig:
    seed: int = 42
    """Seed for prompt/head init (identical on every rank), data order, and dropout (seed + rank)."""
    max_steps: int | None = 600
    """Optimizer steps; null when train.epochs sets the length instead (exactly one of the two is set)."""
    epochs: float | None = None
    """Train for this many passes over the training data instead of max_steps (set
    train.max_steps=null with it): steps = ceil(epochs x training examples / global batch), the
    examples of every task added up in a multi-task run; the count is logged at start-up."""
    batch_size: int = 32
    """Global batch (examples per optimizer step over all ranks); fills train_batch_size "auto"."""
    micro_batch_size: int = 16
    """Examples per rank per forward; fills train_micro_batch_size_per_gpu "auto"."""
    eval_batch_size: int = 64
    """Examples per rank per evaluation forward."""
    lr: float = 1e-2
    """Peak learning rate (prompts want 100-1000x the fine-tuning rate; finetune wants ~5e-5)."""
    weight_decay: float = 0.0
    """AdamW weight decay on the trainable parameters."""
    warmup_ratio: float = 0.06
    """Fraction of the run's steps spent warming the learning rate up (step k of the warm-up at
    k/warmup of the peak); then the lr_scheduler's shape."""
    lr_scheduler: str = "linear"
    """A transformers ``get_scheduler`` schedule: ``linear`` (decay to 0, the schedule this package
    always had), ``cosine``, ``cosine_with_restarts``, ``polynomial``, ``constant`` (no warm-up),
    ``constant_with_warmup``, ``inverse_sqrt``, ``cosine_with_min_lr``, ``cosine_warmup_with_min_lr``,
    ``warmup_stable_decay``. transformers' own warm-up runs the first step at lr 0; ours runs step k
    at k/warmup, one step ahead during the warm-up and identical after it."""
    lr_scheduler_kwargs: dict[str, float] | None = None
    """The schedule's own arguments (transformers' scheduler_specific_kwargs), e.g. {num_cycles: 3}
    for cosine_with_restarts, {lr_end: 1e-5, power: 2} for polynomial, {min_lr_rate: 0.1} for
    cosine_with_min_lr."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = none); fills the DeepSpeed gradient_clipping "auto"."""
    eval_every: int = 100
    """Evaluate on dev every N steps (and at the end); 0 = only at the end."""
    early_stopping_patience: int | None = None
    """Stop when this many evaluations in a row (every train.eval_every steps) did not improve the
    best dev score; the run then ends like a normal one at that step (final evaluation, checkpoint,
    artifacts, results.json with ``stopped_early``). null or 0 = off."""
    log_every: int = 10
    """Log/TensorBoard the training loss every N steps."""
    save_every: int = 100
    """Save a checkpoint of the trainable state every N steps (0 = only at the end and on preemption)."""
    save_every_minutes: float = 0.0
    """Also save when this many minutes passed since the last save (0 = off)."""
    keep_checkpoints: int = 2
    """Keep the newest N checkpoints in output_dir/checkpoints, and the best dev step's (0 = keep all)."""
    resume: str = "auto"
    """auto: continue from the newest complete checkpoint in output_dir if there is one;
    never: start fresh (earlier checkpoints in output_dir are removed)."""
    verify_frozen: bool = True
    """Hash every rank's shard of the frozen weights before and after training and report in
    results.json whether they are bit-identical (costs one read of the local shard)."""
    dist_timeout_s: float = 300.0
    """Seconds any collective (and the start-up rendezvous) may wait for the other ranks before the
    job fails naming this rank and host: a dead node ends the run after this long, not torch's 30 min."""
    disk_margin: float = 2.0
    """Start-up check: output_dir must have at least this many times the estimated bytes of the
    checkpoints kept (train.keep_checkpoints, plus one being written) and the artifact; 0 skips it."""
    activation_checkpointing: bool = False
    """Recompute each transformer layer's activations in the backward instead of keeping them
    (non-reentrant, per layer; BERT/RoBERTa, DeBERTa, MPNet, GLM; same losses and gradients, dropout
    included): far less activation memory for about one extra forward. Under ZeRO-3 with a frozen
    backbone it needs DeepSpeed PR #8148 (0.19.8 has it; older versions are refused). docs/gpu.md."""
    peak_tflops: float | None = None
    """The accelerator's peak TFLOP/s that MFU in results.json is measured against; None = the bf16
    datasheet figure of a known GPU (A100, H100, H200), or no MFU (CPU, unknown device, fp32)."""

    def check(self) -> None:
        self._check_length()
        for k in ("batch_size", "micro_batch_size", "eval_batch_size", "log_every"):
            if getattr(self, k) <= 0:
                raise ConfigError(f"train.{k}: must be > 0, got {getattr(self, k)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr: must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        if self.dist_timeout_s <= 0:
            raise ConfigError(f"train.dist_timeout_s: must be > 0, got {self.dist_timeout_s}")
        for k in ("weight_decay", "max_grad_norm", "eval_every", "save_every", "save_every_minutes", "keep_checkpoints",
                  "disk_margin"):
            if getattr(self, k) < 0:
                raise ConfigError(f"train.{k}: must be >= 0, got {getattr(self, k)}")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise ConfigError(f"train.peak_tflops: must be > 0 (or null), got {self.peak_tflops}")
        if self.resume not in ("auto", "never"):
            raise ConfigError(f"train.resume: must be 'auto' or 'never', got {self.resume!r}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 0:
            raise ConfigError(f"train.early_stopping_patience: must be >= 0 (or null), got {self.early_stopping_patience}")
        if self.early_stopping_patience and not self.eval_every:
            raise ConfigError("train.early_stopping_patience: counts evaluations, but train.eval_every=0 evaluates only "
                              "at the end; set train.eval_every")
        from deepprompt import schedules  # a bad name or argument fails here, before anything loads

        total = self.max_steps or 100  # by epochs the length is known only once the data is read
        schedules.transformers_factor(self.lr_scheduler, self.lr, schedules.warmup_steps(self.warmup_ratio, total),
                                      total, self.lr_scheduler_kwargs)

    def _check_length(self) -> None:
        """Exactly one of max_steps and epochs. max_steps keeps its default of 600 (old configs and
        checkpoints mean it), so training by epochs says train.max_steps=null explicitly."""
        if self.max_steps is not None and self.epochs is not None:
            raise ConfigError(f"train.epochs: set either train.max_steps or train.epochs, not both (max_steps is "
                              f"{self.max_steps}; train by epochs with train.max_steps=null train.epochs={self.epochs:g})")
        if self.max_steps is None and self.epochs is None:
            raise ConfigError("train.max_steps: null, and train.epochs is not set either: set one of them")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"train.max_steps: must be > 0, got {self.max_steps}")
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"train.epochs: must be > 0, got {self.epochs:g}")


MIXER_POLICIES = ("proportional", "temperature", "equal", "weights")


@dataclass
class MixerConfig:
    policy: str = "proportional"
    """Multi-task runs: how the task of each optimizer step is drawn. proportional: rate ∝ training
    examples (capped by mixer.cap, T5's examples-proportional mixing); temperature: rate ∝
    size^(1/T); equal; weights: mixer.weights."""
    cap: int | None = None
    """proportional/temperature: count at most this many training examples per task (T5's K);
    None = no cap."""
    temperature: float = 2.0
    """temperature: T (1 = proportional; larger T moves toward equal)."""
    weights: dict[str, float] | None = None
    """weights: task name -> relative rate (normalised), one entry per task."""
    seed: int | None = None
    """Seed of the task draws; None = train.seed. The task of step s depends only on (seed, s)."""

    def check(self, task_names: list[str]) -> None:
        if self.policy not in MIXER_POLICIES:
            raise ConfigError(f"mixer.policy: unknown policy {self.policy!r} (known: {', '.join(MIXER_POLICIES)})")
        if self.cap is not None and self.cap < 1:
            raise ConfigError(f"mixer.cap: must be >= 1 (or null), got {self.cap}")
        if self.temperature <= 0:
            raise ConfigError(f"mixer.temperature: must be > 0, got {self.temperature}")
        if self.policy != "weights":
            if self.weights is not None:
                raise ConfigError(f"mixer.weights: only used by mixer.policy=weights (policy is {self.policy!r})")
            return
        if not self.weights:
            raise ConfigError("mixer.weights: mixer.policy=weights needs a weight per task, e.g. "
                              f"{{{', '.join(f'{n}: 1.0' for n in task_names)}}}")
        unknown = sorted(set(self.weights) - set(task_names))
        missing = [n for n in task_names if n not in self.weights]
        if unknown or missing:
            raise ConfigError(f"mixer.weights: names {unknown or ''}{' unknown' if unknown else ''}"
                              f"{'; ' if unknown and missing else ''}{f'no weight for {missing}' if missing else ''} "
                              f"(tasks: {', '.join(task_names)})")
        bad = {n: w for n, w in self.weights.items() if w < 0}
        if bad:
            raise ConfigError(f"mixer.weights: weights must be > 0, got {self.weights}")
        never = [n for n, w in self.weights.items() if w == 0]
        if never:  # its head would stay untrained, yet be evaluated, exported and averaged into the BEST-DEV criterion
            raise ConfigError(f"mixer.weights: {', '.join(never)} at weight 0 would never be trained, yet be evaluated, "
                              f"exported and averaged into the BEST-DEV criterion; remove it from tasks "
                              f"(score a trained artifact on it with deepprompt evaluate)")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    tasks: list[TaskConfig] | None = None
    """Multi-task run: a list of task sections (keys as under task.*), trained together with one
    shared prompt and one head each; replaces task, whose keys given in the file or as overrides
    become every entry's defaults. Override one entry with tasks.<index or name>.<key>=value.
    None = the single task."""
    mixer: MixerConfig = field(default_factory=MixerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/default"
    """Where results.json, train_log.jsonl, checkpoints/, the resolved run_config.json/ds_config.json
    and TensorBoard logs go."""

    def task_configs(self) -> list[TaskConfig]:
        """The tasks this run trains: ``tasks``, or the single ``task``."""
        return list(self.tasks) if self.tasks is not None else [self.task]

    def check(self) -> None:
        if self.tasks is not None and not self.tasks:
            raise ConfigError("tasks: must list at least one task (or be null for the single task)")
        self.model.check()
        self.prompt.check()
        for i, task in enumerate(self.task_configs()):
            task.check("task." if self.tasks is None else f"tasks[{i}].")
        self.train.check()
        names = [t.name for t in self.task_configs()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"tasks: task {dup[0]!r} is listed {names.count(dup[0])} times; each task "
                              f"gets one head, keyed by its name")
        self.mixer.check(names)
        # registry names (prompt.method, task.name) are checked where the registries are used:
        # engine/preflight.check_names, before any weights or data load
        if not self.output_dir:
            raise ConfigError("output_dir: must not be empty")

    def to_dict(self) -> dict:
        """The config as plain data (run_config.json, an artifact's "run", the checkpoint signature);
        ``config_from_dict`` reads it back to the same config."""
        out = dataclasses.asdict(self)
        out["task"] = self.task.to_dict()
        if self.tasks is not None:
            out["tasks"] = [t.to_dict() for t in self.tasks]
        return out
