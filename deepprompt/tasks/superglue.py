"""SuperGLUE from the official jsonl release: ``<Task>/train.jsonl``, ``val.jsonl`` (our ``dev``),
``test.jsonl`` (unlabelled in the release, so only train and dev are used unless a test file
carries labels). ``task.data_dir`` is the task's folder (or the SuperGLUE root holding it).

Formulations (the text the backbone sees; [SEP] is the tokenizer's own separator):

==========  ===================================================  =====================  ===========
task        input                                                truncation             metrics
==========  ===================================================  =====================  ===========
boolq       question [SEP] passage                               passage only           acc
cb          premise [SEP] hypothesis                             premise only           acc, f1 (macro)
copa        per choice: premise + " What was the cause?" (or     premise only           acc
            "effect?") [SEP] choice; multiple-choice head
multirc     per answer: question + " " + answer [SEP] passage    passage only           f1a, em
rte         premise [SEP] hypothesis                             premise only           acc
wic         word + ": " + sentence1 with *target* [SEP]          longest first          acc
            sentence2 with *target*
wsc         text with *span1* (the noun) and #span2# (the        end of text            acc
            pronoun) marked
record      per candidate entity: query with @placeholder        passage only           f1, em
            replaced by it [SEP] passage; binary, the best-
            scoring candidate is the answer
==========  ===================================================  =====================  ===========

``task.formulation=cloze`` (BoolQ, CB, RTE, WiC, WSC; the ``cloze`` head scores one verbalizer per
label at the mask token; COPA, MultiRC and ReCoRD refuse it):

==========  ====================================================================  ==================
task        pattern ([MASK] = the tokenizer's mask token)                         verbalizers
==========  ====================================================================  ==================
boolq       passage Question: question? Answer: [MASK].                           false no, true yes
cb          premise Question: hypothesis? Answer: [MASK].                         yes / no / maybe
rte         premise Question: hypothesis? Answer: [MASK].                         yes / no
wic         word: sentence1 sentence2 Question: is the word used in the same      false no, true yes
            sense in both sentences? Answer: [MASK].
wsc         marked text Question: does the pronoun between # refer to the noun    false no, true yes
            between *? Answer: [MASK].
==========  ====================================================================  ==================

MultiRC and ReCoRD passages: HTML tags (``<b>Sent 1: </b>``, ``<br>``) and ``@highlight`` lines are
turned into plain text before tokenising.
"""
from __future__ import annotations

import re
from collections import defaultdict

from deepprompt.data.files import iter_jsonl
from deepprompt.errors import DataError
from deepprompt.metrics.classification import accuracy, macro_f1
from deepprompt.metrics.superglue import multirc_scores, record_scores
from deepprompt.registry import TASKS
from deepprompt.tasks.base import log
from deepprompt.tasks.classification import (MASK, PAIR, TEXT, ClassificationTask, MultipleChoiceTask, get_field,
                                             label_index, mark_span, mark_words)

SPLIT_FILES = {"train": ("train.jsonl",), "dev": ("val.jsonl",), "test": ("test.jsonl",)}


class SuperGlueMixin:
    split_files = SPLIT_FILES

    def read_rows(self, path):
        return iter_jsonl(path)


class PairTask(SuperGlueMixin, ClassificationTask):
    """Two text fields and a label field."""

    fields: tuple[str, str]

    def parse(self, row, where, labelled):
        rec = {"text": get_field(row, self.fields[0], where), "text_pair": get_field(row, self.fields[1], where)}
        if labelled:
            rec["label"] = label_index(self, get_field(row, "label", where, (str, bool, int)), where)
        return [rec]


@TASKS.register("boolq")
class BoolQ(PairTask):
    """BoolQ: yes/no question about a passage. Input ``question [SEP] passage``; only the passage is
    truncated. Accuracy."""

    folder = "BoolQ"
    fields = ("question", "passage")
    label_names = ("false", "true")
    truncate = "text_pair"

    cloze_pattern = (PAIR, " Question:", TEXT, "? Answer:", MASK, ".")
    verbalizers = ("no", "yes")


@TASKS.register("cb")
class CB(PairTask):
    """CommitmentBank: 3-way entailment. Input ``premise [SEP] hypothesis``; only the premise is
    truncated. Accuracy (main) and macro-F1 over the classes."""

    folder = "CB"
    fields = ("premise", "hypothesis")
    label_names = ("entailment", "contradiction", "neutral")
    truncate = "text"

    cloze_pattern = (TEXT, " Question:", PAIR, "? Answer:", MASK, ".")
    verbalizers = ("yes", "no", "maybe")

    def score(self, gold, pred):
        return {"acc": accuracy(gold, pred), "f1": macro_f1(gold, pred)}


@TASKS.register("rte")
class RTE(PairTask):
    """RTE: 2-way entailment. Input ``premise [SEP] hypothesis``; only the premise is truncated."""

    folder = "RTE"
    fields = ("premise", "hypothesis")
    label_names = ("entailment", "not_entailment")
    truncate = "text"

    cloze_pattern = (TEXT, " Question:", PAIR, "? Answer:", MASK, ".")
    verbalizers = ("yes", "no")


@TASKS.register("wic")
class WiC(SuperGlueMixin, ClassificationTask):
    """Word-in-Context: is ``word`` used in the same sense in both sentences? The target occurrence
    (``sentence1[start1:end1]``, ``sentence2[start2:end2]``) is wrapped in ``*`` in each sentence, and
    the word itself leads the first segment: ``word: ... *target* ... [SEP] ... *target* ...``.
    Truncation longest-first (WiC sentences are short)."""

    folder = "WiC"
    label_names = ("false", "true")
    truncate = "longest"

    cloze_pattern = (TEXT, PAIR, " Question: is the word used in the same sense in both sentences? Answer:",
                     MASK, ".")
    verbalizers = ("no", "yes")

    def parse(self, row, where, labelled):
        word = get_field(row, "word", where)
        marked = []
        for k in ("1", "2"):
            sent = get_field(row, f"sentence{k}", where)
            start, end = get_field(row, f"start{k}", where, int), get_field(row, f"end{k}", where, int)
            if not 0 <= start < end <= len(sent):
                raise DataError(f"{where}: start{k}/end{k} ({start}, {end}) is not a span of sentence{k} "
                                f"({len(sent)} characters)")
            marked.append(mark_span(sent, start, end))
        rec = {"text": f"{word}: {marked[0]}", "text_pair": marked[1]}
        if labelled:
            rec["label"] = label_index(self, get_field(row, "label", where, (bool, str)), where)
        return [rec]


@TASKS.register("wsc")
class WSC(SuperGlueMixin, ClassificationTask):
    """Winograd Schema: does the pronoun (span2) refer to the noun phrase (span1)? One segment: the
    text with span1 wrapped in ``*`` and span2 in ``#`` (``*Mark* told Pete ... #He# should ...``).
    ``span*_index`` is a word index into ``text.split()``; if the span's words are not there the
    nearest occurrence is marked, and a span that does not occur is an error. Truncation cuts the
    end of the text. Accuracy."""

    folder = "WSC"
    label_names = ("false", "true")
    pair = False
    truncate = "longest"

    cloze_pattern = (TEXT, " Question: does the pronoun between # refer to the noun between *? Answer:",
                     MASK, ".")
    verbalizers = ("no", "yes")

    def parse(self, row, where, labelled):
        words = get_field(row, "text", where).split()
        for k, (left, right) in (("1", ("*", "*")), ("2", ("#", "#"))):
            span = get_field(row, f"target.span{k}_text", where)
            index = get_field(row, f"target.span{k}_index", where, int)
            words = mark_words(words, index, span, left, right, where, f"target.span{k}_text")
        rec = {"text": " ".join(words)}
        if labelled:
            rec["label"] = label_index(self, get_field(row, "label", where, (bool, str)), where)
        return [rec]


@TASKS.register("copa")
class COPA(SuperGlueMixin, MultipleChoiceTask):
    """Choice of Plausible Alternatives, 2-way multiple choice: for each choice
    ``premise What was the cause? [SEP] choice`` (``effect`` for effect questions); one score per
    choice from its first token. Only the premise is truncated. Accuracy."""

    folder = "COPA"
    num_choices = 2
    truncate = "text"
    QUESTIONS = {"cause": "What was the cause?", "effect": "What was the effect?"}

    def parse(self, row, where, labelled):
        premise = get_field(row, "premise", where)
        question = get_field(row, "question", where)
        if question not in self.QUESTIONS:
            raise DataError(f"{where}: field 'question' must be 'cause' or 'effect', got {question!r}")
        first = f"{premise} {self.QUESTIONS[question]}"
        rec = {"choices": [[first, get_field(row, f"choice{i + 1}", where)] for i in range(self.num_choices)]}
        if labelled:
            label = get_field(row, "label", where, int)
            if not 0 <= label < self.num_choices:
                raise DataError(f"{where}: unknown label {label!r} for task {self.name} (known: 0, 1)")
            rec["label"] = label
        return [rec]


def plain_passage(text: str) -> str:
    """MultiRC's HTML (``<b>Sent 1: </b>...<br>``) and ReCoRD's ``@highlight`` lines as plain text."""
    text = re.sub(r"<br\s*/?>", "\n", text)
    text = re.sub(r"</?b>", "", text)
    text = text.replace("@highlight\n", "- ")
    return " ".join(text.split())


@TASKS.register("multirc")
class MultiRC(SuperGlueMixin, ClassificationTask):
    """Multi-sentence reading comprehension: every (paragraph, question, answer option) is one binary
    example ``question answer [SEP] passage``; only the passage is truncated. Metrics: f1a (binary F1
    over all answer options, main) and em (questions whose options are all right; each question of
    each row counts once, whatever its paragraph/question idx)."""

    folder = "MultiRC"
    label_names = ("0", "1")
    main_metric = "f1a"
    truncate = "text_pair"

    def is_labelled(self, row):
        try:
            return "label" in row["passage"]["questions"][0]["answers"][0]
        except (KeyError, IndexError, TypeError):
            return False

    def parse(self, row, where, labelled):
        passage = plain_passage(get_field(row, "passage.text", where))
        pidx = get_field(row, "idx", where, (int, str))
        records = []
        for qi, q in enumerate(get_field(row, "passage.questions", where, list)):
            qwhere = f"{where}: question {qi}"
            if not isinstance(q, dict):
                raise DataError(f"{qwhere}: expected an object")
            answers = get_field(q, "answers", qwhere, list)
            if not answers:
                raise DataError(f"{qwhere}: no answers")
            texts, labels = [], []
            for ai, a in enumerate(answers):
                awhere = f"{qwhere} answer {ai}"
                if not isinstance(a, dict):
                    raise DataError(f"{awhere}: expected an object")
                texts.append(get_field(a, "text", awhere))
                if labelled:
                    labels.append(label_index(self, get_field(a, "label", awhere, (int, bool)), awhere))
            rec = {"text": get_field(q, "question", qwhere), "passage": passage, "answers": texts,
                   "group": f"{pidx}/{get_field(q, 'idx', qwhere, (int, str))}"}
            if labelled:
                rec["answer_labels"] = labels
            records.append(rec)
        return records

    def expand(self, batch):
        rows = defaultdict(list)
        for r in range(len(batch["id"])):
            for k, answer in enumerate(batch["answers"][r]):
                rows["id"].append(batch["id"][r])
                rows["sub"].append(k)
                rows["group"].append(batch["group"][r])
                rows["text"].append(f"{batch['text'][r]} {answer}")
                rows["text_pair"].append(batch["passage"][r])
                if "answer_labels" in batch:
                    rows["label"].append(batch["answer_labels"][r][k])
        return dict(rows)

    def raw_prediction(self, record, predictions):
        """Per question of the row, in order: a 0/1 label per answer option, in order."""
        per_question: dict[int, dict[int, int]] = defaultdict(dict)
        for p in predictions:
            per_question[p["id"]][p["sub"]] = int(p["label"])
        return {"answer_labels": [[q[s] for s in sorted(q)] for _, q in sorted(per_question.items())]}

    def metrics(self, predictions, split):
        ds = self.features(split).dataset
        gold = {(i, s): l for i, s, l in zip(ds["id"], ds["sub"], ds["labels"])}
        # a question is its record (``id``), not its (paragraph idx, question idx): those repeat when a
        # row does, and when task.folds pools train and val (both number their paragraphs from 0)
        return multirc_scores((p["id"], gold[(p["id"], p["sub"])], self.labels.index(p["label"])) for p in predictions)


@TASKS.register("record")
class ReCoRD(SuperGlueMixin, ClassificationTask):
    """Reading comprehension with commonsense reasoning: a cloze query (``@placeholder``) over a news
    passage; the candidates are the passage's marked entities (``passage.entities``, character
    spans with an INCLUSIVE end, de-duplicated by text). Every candidate is a binary example
    ``query with the candidate filled in [SEP] passage`` (label: the candidate is a gold answer);
    only the passage is truncated. The prediction per query is its best-scoring candidate; EM and
    F1 are the max over the gold answers with SQuAD normalisation (f1 is the main metric)."""

    folder = "ReCoRD"
    label_names = ("false", "true")
    main_metric = "f1"
    truncate = "text_pair"

    def is_labelled(self, row):
        try:
            return "answers" in row["qas"][0]
        except (KeyError, IndexError, TypeError):
            return False

    def parse(self, row, where, labelled):
        raw = get_field(row, "passage.text", where)
        candidates = set()
        for ei, ent in enumerate(get_field(row, "passage.entities", where, list)):
            ewhere = f"{where}: entity {ei}"
            start, end = get_field(ent, "start", ewhere, int), get_field(ent, "end", ewhere, int)
            if not 0 <= start <= end < len(raw):
                raise DataError(f"{ewhere}: span ({start}, {end}) is outside the passage ({len(raw)} characters)")
            candidates.add(raw[start:end + 1])
        candidates = sorted(candidates)
        passage = plain_passage(raw)
        records = []
        for qi, qa in enumerate(get_field(row, "qas", where, list)):
            qwhere = f"{where}: query {qi}"
            query = get_field(qa, "query", qwhere)
            if "@placeholder" not in query:
                raise DataError(f"{qwhere}: the query has no @placeholder")
            rec = {"text": query, "passage": passage, "candidates": candidates}
            if labelled:
                golds = set()
                for ai, ans in enumerate(get_field(qa, "answers", qwhere, list)):
                    awhere = f"{qwhere} answer {ai}"
                    text = get_field(ans, "text", awhere)
                    if "start" in ans or "end" in ans:
                        s, e = get_field(ans, "start", awhere, int), get_field(ans, "end", awhere, int)
                        if raw[s:e + 1] != text:
                            raise DataError(f"{awhere}: answer {text!r} is not the passage's text at ({s}, {e})")
                    golds.add(text)
                if not golds:
                    raise DataError(f"{qwhere}: no answers")
                rec["answers"] = sorted(golds)
            records.append(rec)
        return records

    def read_examples(self, split):
        records = super().read_examples(split)
        no_cands = [r for r in records if not r["candidates"]]
        if no_cands:
            raise DataError(f"{self.split_source(split)}: {len(no_cands)} queries have no candidate entities "
                            f"(the first is query {no_cands[0]['id']})")
        unreachable = sum(1 for r in records if "answers" in r and not set(r["answers"]) & set(r["candidates"]))
        if unreachable:
            log.warning("record/%s: %d of %d queries have no gold answer among their candidate entities "
                        "(they can only score F1 by partial overlap)", split, unreachable, len(records))
        return records

    def expand(self, batch):
        rows = defaultdict(list)
        for r in range(len(batch["id"])):
            golds = set(batch["answers"][r]) if "answers" in batch else None
            for k, cand in enumerate(batch["candidates"][r]):
                rows["id"].append(batch["id"][r])
                rows["sub"].append(k)
                rows["candidate"].append(cand)
                rows["text"].append(batch["text"][r].replace("@placeholder", cand))
                rows["text_pair"].append(batch["passage"][r])
                if golds is not None:
                    rows["label"].append(int(cand in golds))
                    rows["answers"].append(batch["answers"][r])
        return dict(rows)

    @staticmethod
    def best_candidates(predictions) -> dict[int, int]:
        """Query id -> the ``sub`` (candidate index) of its best-scoring candidate (ties: the first)."""
        best: dict[int, tuple[float, int]] = {}
        for p in predictions:
            key = (p["score"], -p["sub"])
            if p["id"] not in best or key > best[p["id"]]:
                best[p["id"]] = key
        return {q: -key[1] for q, key in best.items()}

    def raw_prediction(self, record, predictions):
        """Per query of the row, in order: its best-scoring candidate entity."""
        queries = self.parse(record, "input", labelled=False)
        return {"answers": [queries[q]["candidates"][s] for q, s in sorted(self.best_candidates(predictions).items())]}

    def metrics(self, predictions, split):
        ds = self.features(split).dataset
        info = {(i, s): (c, a) for i, s, c, a in zip(ds["id"], ds["sub"], ds["candidate"], ds["answers"])}
        return record_scores(info[(q, s)] for q, s in sorted(self.best_candidates(predictions).items()))
