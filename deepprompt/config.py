"""Typed run configuration: a YAML/JSON file plus dotted ``key=value`` overrides.

The defaults ARE the embedded default run: P-Tuning v2 (prefix) on all-MiniLM-L6-v2 for WNUT-16 NER.
The DeepSpeed JSON owns ZeRO, precision and micro-batching; this file owns everything else, and the
DeepSpeed JSON's ``"auto"`` values are filled from here (see ``engine/ds_setup.py``).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from deepprompt.errors import ConfigError
from deepprompt.fileio import read_text

log = logging.getLogger("deepprompt")


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
    """Use only the first N training examples (quick experiments); None = all."""
    train_file: str | None = None
    """The training file (or CoNLL-2012 directory), instead of the task's default name under data_dir.
    Every task honours ``train_file``/``dev_file``/``test_file``; with all the splits it uses set,
    data_dir is not needed."""
    dev_file: str | None = None
    """The dev file (or directory), instead of the task's default name under data_dir."""
    test_file: str | None = None
    """The test file (or directory), instead of the task's default name under data_dir (e.g. CoNLL-2005
    ``test.brown``)."""
    labels: list[str] | None = None
    """custom tasks, conll05/conll12: the label set, in this order; None = every label of the
    training split (sorted; ``O`` first for tagging)."""
    text_column: str = "text"
    """custom_classification: the JSONL field / CSV column of the text."""
    text_pair_column: str | None = None
    """custom_classification: the field / column of the second text (sentence pairs); None = single text."""
    label_column: str = "label"
    """custom_classification: the field / column of the label."""
    word_column: int = 0
    """custom_tagging: the column of the word in the CoNLL file (0-based; negative counts from the end)."""
    tag_column: int = -1
    """custom_tagging: the column of the tag in the CoNLL file (0-based; negative counts from the end)."""
    max_eval_examples: int | None = None
    """qa, squad_gen, generation: score only the first N questions/examples (file order) of dev/test (quick or budgeted
    evaluation); None = all."""
    doc_stride: int = 32
    """qa: context tokens shared by consecutive windows when a context does not fit in one; must be
    less than max_seq_length - max_query_length - the special tokens."""
    max_query_length: int = 64
    """qa: questions longer than this many sub-word tokens are cut to it (counted in the log)."""
    max_answer_length: int = 30
    """qa: longest answer span, in sub-word tokens, the n-best search considers."""
    n_best: int = 20
    """qa: start and end candidates per window (top-n each) in the span search."""
    train_files: list[str] | None = None
    """qa: JSON files (paths, names inside data_dir, or SQuADShifts set names new_wiki, nyt,
    reddit, amazon) concatenated as the train split; None = the data_dir's train file (for the
    squad asset: all four SQuADShifts sets)."""
    prompt_field: str = "prompt"
    """generation: the JSONL field of the prompt (ChatGLM's ADGEN: ``content``)."""
    response_field: str = "response"
    """generation: the JSONL field of the response, a string or a list of references (ADGEN: ``summary``)."""
    messages_field: str = "messages"
    """generation: the JSONL field of a chat (``[{"role", "content"}, ...]``, the last one the
    assistant's response), rendered with the tokenizer's chat template."""
    use_chat_template: bool = False
    """generation, squad_gen: render a plain prompt as one user turn through the tokenizer's chat
    template (instruction-tuned decoders)."""
    max_new_tokens: int = 32
    """generation, squad_gen: most tokens generated per example in evaluation and prediction
    (generation stops earlier at EOS)."""
    do_sample: bool = False
    """generation, squad_gen: sample (with ``temperature``, ``top_k``, ``top_p`` and
    ``sample_seed``) instead of greedy decoding."""
    temperature: float = 1.0
    """generation, squad_gen: softmax temperature when sampling."""
    top_k: int = 0
    """generation, squad_gen: sample among the k most likely tokens only; 0 = all."""
    top_p: float = 1.0
    """generation, squad_gen: nucleus sampling: the smallest set of tokens of total probability >= top_p."""
    sample_seed: int = 0
    """generation, squad_gen: seed of the sampling generator (the same samples for the same run)."""

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"task.max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ConfigError(f"task.temperature: must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"task.top_p: must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"task.top_k: must be >= 0, got {self.top_k}")
        if self.train_file and self.train_files:
            raise ConfigError("task.train_files: set task.train_file (one file) or task.train_files (several), not both")
        if self.max_seq_length < 8:
            raise ConfigError(f"task.max_seq_length: must be >= 8, got {self.max_seq_length}")
        if self.formulation not in ("classification", "cloze"):
            raise ConfigError(f"task.formulation: must be classification or cloze, got {self.formulation!r}")
        for k in ("max_query_length", "max_answer_length", "n_best"):
            if getattr(self, k) < 1:
                raise ConfigError(f"task.{k}: must be >= 1, got {getattr(self, k)}")
        if self.doc_stride < 0:
            raise ConfigError(f"task.doc_stride: must be >= 0, got {self.doc_stride}")
        if self.max_eval_examples is not None and self.max_eval_examples < 1:
            raise ConfigError(f"task.max_eval_examples: must be >= 1, got {self.max_eval_examples}")


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
    """Gradient clipping; fills the DeepSpeed gradient_clipping "auto"."""
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
        for k in ("eval_every", "save_every", "save_every_minutes", "keep_checkpoints", "disk_margin"):
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
        if bad or sum(self.weights.values()) <= 0:
            raise ConfigError(f"mixer.weights: weights must be >= 0 with a positive sum, got {self.weights}")


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
        for section in (self.model, self.prompt, *self.task_configs(), self.train):
            section.check()
        names = [t.name for t in self.task_configs()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"tasks: task {dup[0]!r} is listed {names.count(dup[0])} times; each task "
                              f"gets one head, keyed by its name")
        self.mixer.check(names)
        # names are checked here, before any weights or data load
        import deepprompt.prompts  # noqa: F401  (registers the methods)
        import deepprompt.tasks  # noqa: F401
        from deepprompt.registry import PROMPTS, TASKS
        PROMPTS.get(self.prompt.method, "prompt.method")
        for i, name in enumerate(names):
            TASKS.get(name, "task.name" if self.tasks is None else f"tasks[{i}].name")
        if not self.output_dir:
            raise ConfigError("output_dir: must not be empty")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------- loading

def _build(cls, data: dict, prefix: str):
    """Build dataclass ``cls`` from a dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r:.60}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {', '.join(names)})"
            raise ConfigError(f"{prefix}{key}: unknown config key{hint}")
        kwargs[key] = _coerce(hints[key], value, prefix + key)
    return cls(**kwargs)


def _coerce(tp, value, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if dataclasses.is_dataclass(args[0]):
            return [_build(args[0], v, f"{key}[{i}].") for i, v in enumerate(value)]
        return [_coerce(args[0], v, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(args[0], k, key): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "3e-2" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is bool and isinstance(value, bool):
        return value
    if tp in (int, str) and isinstance(value, tp) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _set_dotted(tree: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = tree
    for i, p in enumerate(parts[:-1]):
        if isinstance(node.get(p), list):  # an earlier override gave the list: tasks=[...] tasks.0.key=v
            rest = ".".join(parts[i + 1:])
            node[p] = _merge_entries(node[p], parse_overrides([f"{rest}={json.dumps(value)}"]), p)
            return
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict:
    tree: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. prompt.length=16)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict, over: dict, prefix: str = "") -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and out.get(k) is not None and not isinstance(out[k], (dict, list)):
            # ``train: 5`` then ``train.lr=...``: the override must not quietly replace the bad section
            raise ConfigError(f"{prefix}{k}: expected a mapping, got {out[k]!r:.60}")
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, f"{prefix}{k}.")
        elif isinstance(v, dict) and isinstance(out.get(k), list):  # tasks.<index or name>.key=value
            out[k] = _merge_entries(out[k], v, f"{prefix}{k}")
        else:
            out[k] = v
    return out


def _merge_entries(entries: list, over: dict, key: str) -> list:
    """Overrides of single list entries, selected by index or by their ``name``."""
    out = list(entries)
    names = [e.get("name") if isinstance(e, dict) else None for e in out]
    for sel, v in over.items():
        sel = str(sel)
        if sel.isdigit() and int(sel) < len(out):
            i = int(sel)
        elif sel in names:
            i = names.index(sel)
        else:
            raise ConfigError(f"{key}.{sel}: no such entry (use an index 0..{len(out) - 1} or a name: "
                              f"{', '.join(str(n) for n in names)})")
        out[i] = _merge(out[i], v, f"{key}.{sel}.") if isinstance(v, dict) and isinstance(out[i], dict) else v
    return out


def _with_task_defaults(data: dict) -> dict:
    """A multi-task config's ``task`` section holds every ``tasks`` entry's defaults."""
    tasks, shared = data.get("tasks"), data.get("task")
    if not isinstance(tasks, list) or not isinstance(shared, dict):
        return data
    return {**data, "tasks": [_merge(shared, e) if isinstance(e, dict) else e for e in tasks]}


def read_config_file(path: str | os.PathLike) -> dict:
    """The run-config file as a dict of sections; anything wrong with the file itself (not UTF-8, not
    YAML/JSON, not a mapping, a section that is not a mapping) is one line naming it. An empty file
    is allowed (the run is the embedded default) but said in a warning."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--config: file not found: {p}")
    text = read_text(p, ConfigError)
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else (f":{e.lineno}" if hasattr(e, "lineno") else "")
        raise ConfigError(f"{p}{line}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: "
                          f"{getattr(e, 'problem', None) or getattr(e, 'msg', e)}") from None
    if data is None or data == {}:
        log.warning("%s: the config file is empty: running the embedded default job (plus any key=value "
                    "overrides)", p)
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections (model:, prompt:, task:, train: ...), got "
                          f"{type(data).__name__} {data!r:.60}")
    sections = [f.name for f in dataclasses.fields(RunConfig) if f.name not in ("tasks", "output_dir")]
    for name in sections:
        if name in data and not isinstance(data[name], dict):
            raise ConfigError(f"{p}: {name}: expected a mapping, got {data[name]!r:.60}")
    if data.get("tasks") is not None and not isinstance(data["tasks"], list):
        raise ConfigError(f"{p}: tasks: expected a list of task sections, got {data['tasks']!r:.60}")
    return data


def from_dict(cls, data: dict, prefix: str = ""):
    """Build and check any config dataclass from a plain dict (e.g. one read back from JSON)."""
    cfg = _build(cls, data, prefix)
    cfg.check()
    return cfg


def config_from_dict(data: dict, overrides: list[str] | None = None) -> RunConfig:
    """The embedded defaults, updated by ``data`` and then by ``key=value`` overrides."""
    over = parse_overrides(overrides or [])
    # the shared task defaults first (file + overrides), then per-entry overrides (tasks.<i>.key)
    entry_over = over.pop("tasks", None) if isinstance(over.get("tasks"), dict) else None
    merged = _with_task_defaults(_merge(data, over))
    if entry_over is not None:
        merged = _merge(merged, {"tasks": entry_over})
    return from_dict(RunConfig, merged)


def load_config(path: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """The embedded defaults, updated by the file at ``path`` and then by ``key=value`` overrides."""
    return config_from_dict(read_config_file(path) if path else {}, overrides)


def flatten(d: dict | None, prefix: str = "") -> dict:
    """A nested config dict as dotted keys: ``train.lr``, ``tasks[1].name``; ``mixer.weights`` (a
    mapping of task to weight) stays one value."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict) and k != "weights":
            out.update(flatten(v, f"{prefix}{k}."))
        elif isinstance(v, list) and v and all(isinstance(e, dict) for e in v):
            for i, entry in enumerate(v):
                out.update(flatten(entry, f"{prefix}{k}[{i}]."))
        else:
            out[prefix + k] = v
    return out


def reference_markdown() -> str:
    """docs/config.md: every key with its default and doc, one table per section, generated from
    the field docstrings (``python -m deepprompt config-docs > docs/config.md``; a test keeps the file
    equal to this)."""
    import re

    def literal(default: str) -> str:
        return {"None": "null", "True": "true", "False": "false"}.get(default, default.strip("'"))

    sections: dict[str, list[str]] = {}
    for key, default, doc in field_docs():
        section = key.split(".")[0] if "." in key else "run"
        doc = re.sub(r"``([^`]+)``", r"`\1`", doc).replace("|", "\\|")
        sections.setdefault(section, []).append(f"| `{key}` | `{literal(default)}` | {doc} |")
    out = ["# Configuration reference", "",
           "Generated from the field docstrings of `deepprompt/config.py` by "
           "`python -m deepprompt config-docs > docs/config.md`; a test fails when this page and the code differ.",
           "How a run is configured (defaults, a YAML/JSON file, `key=value` overrides) and how the DeepSpeed JSON's "
           '`"auto"` values are filled: [README, Configuration](../README.md#configuration).', ""]
    for section, rows in sections.items():
        out += [f"## `{section}`" if section != "run" else "## Top level", "", "| key | default | meaning |",
                "|---|---|---|", *rows, ""]
    return "\n".join(out)


def field_docs(cls=RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, doc) for every config key, read from the field docstrings (for the README)."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = " ".join(str(b.value.value).split())
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            rows += field_docs(type(default), prefix + f.name + ".")
        else:
            rows.append((prefix + f.name, repr(default), docs.get(f.name, "")))
    return rows
