"""Generation tasks for decoder LLMs: prompt -> response, trained with the ``lm`` head (causal-LM
loss on the response tokens and EOS only) and evaluated by generating (``engine/generate.py``,
called from the training loop's own evaluation).

``generation``: JSONL, one example per line, either
  * ``{"prompt": ..., "response": ...}`` (field names ``task.prompt_field``/``task.response_field``;
    ChatGLM's ADGEN layout is ``task.prompt_field=content task.response_field=summary``); the
    response may be a list of strings (several references; training uses the first); or
  * ``{"messages": [{"role": ..., "content": ...}, ...]}`` (``task.messages_field``), the last message
    the assistant's response, the others rendered with the tokenizer's chat template.
  With ``task.use_chat_template=true`` a prompt/response pair is rendered as one user turn too.
  Files: ``task.train_file``/``dev_file``/``test_file``, or ``train.jsonl``/``dev.jsonl``/``test.jsonl``
  under ``task.data_dir``. Metrics: ROUGE-1/2/L, BLEU-4, exact match (``metrics/generation.py``).
``squad_gen``: SQuAD-format QA as generation (``Context: ... Question: ... Answer:`` -> the first
  gold answer), the files of the ``squad`` task (SQuADShifts train -> SQuAD v1.1 dev), scored with
  the official SQuAD v1.1 EM/F1 against every gold answer.

A feature: ``input_ids`` = prompt + response + EOS, ``labels`` = -100 on the prompt, the response
ids and EOS after it; ``prompt_ids`` (what generation starts from) and ``references`` stay on the
host. Over ``task.max_seq_length`` the response is cut to at most half of it and the prompt loses
its FIRST tokens (the question at the end of a squad_gen prompt survives); cuts are counted in the log.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from deepprompt.data.files import iter_jsonl
from deepprompt.errors import ConfigError, DataError
from deepprompt.metrics.generation import generation_metrics
from deepprompt.metrics.squad import squad_v1
from deepprompt.registry import TASKS
from deepprompt.tasks.base import PAD_LABEL as IGNORE
from deepprompt.tasks.base import Task, log
from deepprompt.tasks.qa import QATask, Squad


@dataclass
class GenerationOptions:
    """The ``task.*`` keys of the generative tasks (generation, squad_gen)."""
    prompt_field: str = "prompt"
    """generation: the JSONL field of the prompt (ChatGLM's ADGEN: ``content``)."""
    response_field: str = "response"
    """generation: the JSONL field of the response, a string or a list of references (ADGEN: ``summary``)."""
    messages_field: str = "messages"
    """generation: the JSONL field of a chat (``[{"role", "content"}, ...]``, the last one the
    assistant's response), rendered with the tokenizer's chat template."""
    use_chat_template: bool = False
    """Render a plain prompt as one user turn through the tokenizer's chat template
    (instruction-tuned decoders)."""
    max_new_tokens: int = 32
    """Most tokens generated per example in evaluation and prediction (generation stops earlier at EOS)."""
    do_sample: bool = False
    """Sample (with ``temperature``, ``top_k``, ``top_p`` and ``sample_seed``) instead of greedy decoding."""
    temperature: float = 1.0
    """Softmax temperature when sampling."""
    top_k: int = 0
    """Sample among the k most likely tokens only; 0 = all."""
    top_p: float = 1.0
    """Nucleus sampling: the smallest set of tokens of total probability >= top_p."""
    sample_seed: int = 0
    """Seed of the sampling generator (the same samples for the same run)."""
    max_eval_examples: int | None = None
    """Score only the first N examples (file order) of dev/test (quick or budgeted evaluation); None = all."""

    def check(self, cfg, prefix: str) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"{prefix}max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ConfigError(f"{prefix}temperature: must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"{prefix}top_p: must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"{prefix}top_k: must be >= 0, got {self.top_k}")
        if self.max_eval_examples is not None and self.max_eval_examples < 1:
            raise ConfigError(f"{prefix}max_eval_examples: must be >= 1, got {self.max_eval_examples}")


@dataclass
class SquadGenOptions(GenerationOptions):
    """squad_gen: the generation keys, and the squad files' ``train_files``."""
    train_files: list[str] | None = None
    """squad_gen: JSON files (paths, names inside data_dir, or SQuADShifts set names new_wiki, nyt,
    reddit, amazon) concatenated as the train split; None = the data_dir's train file (for the
    squad asset: all four SQuADShifts sets)."""

    def check(self, cfg, prefix: str) -> None:
        super().check(cfg, prefix)
        if cfg.train_file and self.train_files:
            raise ConfigError(f"{prefix}train_files: set {prefix}train_file (one file) or {prefix}train_files "
                              f"(several), not both")


class GenerativeTask(Task):
    Options = GenerationOptions
    head = "lm"
    generates = True
    tensor_keys = ("input_ids", "attention_mask", "labels")
    main_metric = "rougeL"

    @property
    def labels(self):
        return []

    # ---- records -> prompt/response text
    def chat(self, messages: list[dict], where: str) -> str:
        """The chat template's rendering of ``messages`` with the assistant's turn opened."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise DataError(f"{where}: chat messages need a chat template and the tokenizer of model.path has none "
                            f"(use prompt/response fields instead)")
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # a template error (jinja) on this conversation
            raise DataError(f"{where}: the chat template fails on these messages: {str(e).splitlines()[0]}") from None

    def record(self, prompt: str, references: list[str], rid: str, chat: bool) -> dict:
        return {"id": rid, "prompt": prompt, "references": references, "chat": chat}

    # ---- features
    def encode(self, batch):
        tok, limit = self.tokenizer, self.cfg.max_seq_length
        eos = tok.eos_token_id
        if eos is None:
            raise ConfigError("model.path: the tokenizer has no EOS token; generation tasks need one to stop")
        out = {k: [] for k in ("input_ids", "attention_mask", "labels", "prompt_ids", "references", "id", "cut")}
        for prompt, refs, rid, chat in zip(batch["prompt"], batch["references"], batch["id"], batch["chat"]):
            p = tok(prompt, add_special_tokens=not chat)["input_ids"]
            r = tok(self.response_text(refs[0], chat), add_special_tokens=False)["input_ids"] + [eos] if refs else []
            cut = False
            if len(r) > limit // 2 and len(p) + len(r) > limit:
                r, cut = r[:max(limit // 2, limit - len(p))], True
            if len(p) + len(r) > limit:
                p, cut = p[len(p) + len(r) - limit:], True
            ids = p + r
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append([IGNORE] * len(p) + r)
            out["prompt_ids"].append(p)
            out["references"].append(refs)
            out["id"].append(rid)
            out["cut"].append(cut)
        return out

    def response_text(self, text: str, chat: bool) -> str:
        """The response as it follows the prompt (a plain prompt gets a separating space)."""
        return text if chat or text.startswith((" ", "\n")) else " " + text

    def build_features(self, split):
        feats = super().build_features(split)
        cut = sum(feats.dataset["cut"])
        if cut:
            log.warning("%s/%s: %d example(s) longer than task.max_seq_length=%d tokens were cut (prompt from the "
                        "left, response to at most half)", self.name, split, cut, self.cfg.max_seq_length)
        return feats

    # ---- generation (engine/generate.py reads these)
    def generation_prompts(self, features: list[dict]) -> list[list[int]]:
        return [f["prompt_ids"] for f in features]

    def generation_options(self) -> dict:
        c = self.opts
        return {"max_new_tokens": c.max_new_tokens, "do_sample": c.do_sample, "temperature": c.temperature,
                "top_k": c.top_k, "top_p": c.top_p, "seed": c.sample_seed,
                "eos_id": self.tokenizer.eos_token_id,
                "pad_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                else self.tokenizer.eos_token_id}

    def predict(self, generated: list[list[int]], features: list[dict]) -> list[dict]:
        """``generated``: the new token ids of each feature (EOS and after dropped)."""
        return [{"id": f["id"], "text": self.tokenizer.decode(g, skip_special_tokens=True).strip()}
                for g, f in zip(generated, features, strict=True)]

    # ---- raw input (launcher/predict.py)
    def cut_effect(self):
        return f"their prompts lost their first tokens (task.max_seq_length={self.cfg.max_seq_length})"

    def input_cut(self, feature):
        return bool(feature["cut"])

    def raw_features(self, record, where="input"):
        rec = self.parse_row(record, where, need_response=False)
        feat = {k: v for k, v in self.encode_rows([rec])[0].items() if k != "labels"}
        if not feat["prompt_ids"]:  # generation would start from no token at all
            raise DataError(f"{where}: task {self.name}: the prompt is empty (no tokens); nothing to generate from")
        return [feat]


@TASKS.register("generation")
class Generation(GenerativeTask):
    split_files = {"train": ("train.jsonl",), "dev": ("dev.jsonl",), "test": ("test.jsonl",)}
    source_kind, needs_files, data_help = "file", True, "train.jsonl, dev.jsonl [, test.jsonl]"

    @property
    def splits(self):
        return tuple(s for s in ("train", "dev", "test")
                     if getattr(self.cfg, f"{s}_file") or s != "test"
                     or (self.cfg.data_dir and self._found(self.data_dir("test") / "test.jsonl")))

    def parse_row(self, row: dict, where: str, need_response: bool = True) -> dict:
        c = self.opts
        if c.messages_field in row:
            messages = row[c.messages_field]
            if (not isinstance(messages, list) or not messages
                    or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                               and isinstance(m.get("content"), str) for m in messages)):
                raise DataError(f"{where}: field {c.messages_field!r} must be a non-empty list of "
                                f"{{\"role\": str, \"content\": str}}")
            refs = []
            if need_response:
                if messages[-1]["role"] != "assistant" or len(messages) < 2:
                    raise DataError(f"{where}: the last of the {c.messages_field!r} must be the assistant's response "
                                    f"(after at least one other message)")
                refs, messages = [messages[-1]["content"]], messages[:-1]
            return self.record(self.chat(messages, where), refs, where, chat=True)
        if c.prompt_field not in row or not isinstance(row[c.prompt_field], str):
            raise DataError(f"{where}: no {c.prompt_field!r} string (task.prompt_field) and no "
                            f"{c.messages_field!r} list (task.messages_field)")
        refs = []
        if need_response:
            resp = row.get(c.response_field)
            refs = [resp] if isinstance(resp, str) else resp
            if (not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r.strip() for r in refs)):
                raise DataError(f"{where}: no response: field {c.response_field!r} (task.response_field) must be a "
                                f"non-empty string or list of strings")
        prompt = row[c.prompt_field]
        if c.use_chat_template:
            return self.record(self.chat([{"role": "user", "content": prompt}], where), refs, where, chat=True)
        return self.record(prompt, refs, where, chat=False)

    def read_examples(self, split):
        if split not in self.splits:
            raise ConfigError(f"task {self.name}: no {split!r} split (splits: {', '.join(self.splits)})")
        out = [self.parse_row(row, where) for where, row in iter_jsonl(self.split_source(split))]
        if split != "train" and self.opts.max_eval_examples is not None and len(out) > self.opts.max_eval_examples:
            log.info("%s/%s: scoring the first %d of %d examples (task.max_eval_examples)", self.name, split,
                     self.opts.max_eval_examples, len(out))
            out = out[:self.opts.max_eval_examples]
        return out

    def metrics(self, predictions, split):
        if not hasattr(self, "_refs") or split not in self._refs:  # read once per split, not per evaluation
            self._refs = {**getattr(self, "_refs", {}),
                          split: {r["id"]: r["references"] for r in self.read_examples(split)}}
        refs = self._refs[split]
        return generation_metrics([p["text"] for p in predictions], [refs[p["id"]] for p in predictions])


@TASKS.register("squad_gen")
class SquadGen(GenerativeTask, QATask):
    """SQuAD v1.1 QA as generation, on the ``squad`` task's files (default: the ``squad`` asset)."""
    Options = SquadGenOptions
    main_metric = "f1"
    default_asset = "squad"
    split_files = Squad.split_files
    tensor_keys = GenerativeTask.tensor_keys
    TEMPLATE: ClassVar[str] = "Context: {context}\nQuestion: {question}\nAnswer:"

    def __init__(self, cfg, tokenizer):
        Task.__init__(self, cfg, tokenizer)  # not QATask's window checks: nothing is windowed here
        self._records = {}

    def read_examples(self, split):
        out = []
        for r in QATask.read_examples(self, split):
            prompt = self.TEMPLATE.format(context=r["context"].strip(), question=r["question"].strip())
            if self.opts.use_chat_template:
                out.append(self.record(self.chat([{"role": "user", "content": prompt}], r["id"]),
                                       r["answer_texts"], r["id"], chat=True))
            else:
                out.append(self.record(prompt, r["answer_texts"], r["id"], chat=False))
        return out

    def build_features(self, split):
        return GenerativeTask.build_features(self, split)

    def parse_row(self, row, where, need_response=False):
        for k in ("context", "question"):
            if not isinstance(row.get(k), str):
                raise DataError(f"{where}: field {k!r} must be a string")
        prompt = self.TEMPLATE.format(context=row["context"].strip(), question=row["question"].strip())
        if self.opts.use_chat_template:
            return self.record(self.chat([{"role": "user", "content": prompt}], where), [], where, chat=True)
        return self.record(prompt, [], where, chat=False)

    def raw_prediction(self, record, predictions):
        return GenerativeTask.raw_prediction(self, record, predictions)

    def metrics(self, predictions, split):
        records = self._records.get(split) or QATask.read_examples(self, split)
        golds = {r["id"]: r["answer_texts"] for r in records}
        return squad_v1({p["id"]: p["text"] for p in predictions}, golds)
