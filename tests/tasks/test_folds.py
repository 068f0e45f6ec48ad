"""``task.folds``/``task.fold``: a deterministic k-way re-split in which train, dev and test rotate."""
import pytest

from deepprompt.config import load_config
from deepprompt.errors import ConfigError
from deepprompt.tasks import build_task
from tests.tiny import FIXTURES


def task(*over):
    return build_task(load_config(None, [f"task.data_dir={FIXTURES / 'wnut16'}", *over]).task, None)


def key(record):
    return tuple(record["words"]), tuple(record["tags"])


def test_folds_rotate_over_all_the_data_deterministically():
    plain = task()
    pool = sorted(key(r) for s in ("train", "dev", "test") for r in plain.read_examples(s))
    k = 3
    held_dev, held_test = [], []
    for f in range(k):
        t = task(f"task.folds={k}", f"task.fold={f}")
        parts = {s: t.fold_examples(s) for s in ("train", "dev", "test")}
        # one fold: the three splits partition the pooled data; ids are positions in the new split
        assert sorted(key(r) for p in parts.values() for r in p) == pool
        assert all([r["id"] for r in p] == list(range(len(p))) for p in parts.values())
        assert abs(len(parts["dev"]) - len(parts["test"])) <= 1
        assert abs(len(parts["dev"]) + len(parts["test"]) - len(pool) / k) <= 1
        held_dev += [key(r) for r in parts["dev"]]
        held_test += [key(r) for r in parts["test"]]
        again = task(f"task.folds={k}", f"task.fold={f}").fold_examples("dev")
        assert [key(r) for r in again] == [key(r) for r in parts["dev"]]
    # over the k folds every example is held out exactly once (as dev or as test)
    assert sorted(held_dev + held_test) == pool
    assert len(set(held_dev)) == len(held_dev) and not set(held_dev) & set(held_test)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from deepprompt.models.loading import load_tokenizer_and_config
    from tests.tiny import save_tiny_bert

    return load_tokenizer_and_config(str(save_tiny_bert(tmp_path_factory.mktemp("tiny"))))[0]


def test_features_come_from_the_fold(tok):
    cfg = load_config(None, [f"task.data_dir={FIXTURES / 'wnut16'}", "task.folds=2", "task.fold=1"]).task
    t = build_task(cfg, tok)
    assert len(t.features("dev")) == len(t.fold_examples("dev")) != len(build_task(
        load_config(None, [f"task.data_dir={FIXTURES / 'wnut16'}"]).task, tok).features("dev"))


@pytest.mark.parametrize("over, says", [
    (["task.folds=1"], "task.folds: must be >= 2"),
    (["task.folds=3", "task.fold=3"], "task.fold: must be in 0..2"),
    (["task.fold=1"], "task.fold: must be in 0..0"),
])
def test_bad_fold_settings_name_the_key(over, says):
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        load_config(None, over)


def test_a_task_without_a_labelled_test_split_is_refused(tok):
    cfg = load_config(None, ["task.name=squad", f"task.data_dir={FIXTURES / 'squad'}", "task.folds=2"]).task
    with pytest.raises(ConfigError, match="task.folds: task squad has no labelled test split"):
        build_task(cfg, tok).fold_examples("train")


def test_a_label_set_read_from_the_data_comes_from_every_split_under_folds(tok):
    """conll12's fixture has a tag only in dev: without folds it cannot be predicted (and is counted);
    with folds the dev sentence may land in a fold's train, where it was trained as no label at all."""
    def conll12(*over):
        return build_task(load_config(None, ["task.name=conll12", f"task.data_dir={FIXTURES / 'conll2012'}",
                                             *over]).task, tok)

    plain = conll12()
    only_dev = {t for r in plain.read_examples("dev") for t in r["tags"]} - set(plain.labels)
    assert only_dev  # the fixture still has the case this test is about
    for fold in range(3):
        t = conll12("task.folds=3", f"task.fold={fold}")
        assert only_dev <= set(t.labels)
        assert all(tag in t.labels for f in t.features("train") for tag in f["gold"])
