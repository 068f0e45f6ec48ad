"""GLM's tokenizers: the command tokens sit at the original ids; text round-trips; word_ids work."""
import pytest

from deepprompt.errors import ConfigError
from deepprompt.models.glm.tokenizer import COMMANDS, load_tokenizer
from tests.models.glm.tiny_glm import write_gpt2_files
from tests.tiny import fixture_words


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt2")
    n = write_gpt2_files(d)
    return load_tokenizer(d, "gpt2"), n


def test_gpt2_command_token_ids_follow_the_original(gpt2):
    tok, n = gpt2
    # GLM's GPT2BPETokenizer(add_block_symbols=True, add_task_mask=True): after the 50257 text tokens
    want = {"<|startofpiece|>": n, "<|endofpiece|>": n + 1, "[CLS]": n + 2, "[MASK]": n + 3, "[SEP]": n + 4,
            "[UNK]": n + 5, "[gMASK]": n + 6, "[sMASK]": n + 7}
    assert {t: tok.convert_tokens_to_ids(t) for t in COMMANDS} == want
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    assert tok.pad_token_id == tok.eos_token_id == eot and eot < n
    assert (tok.cls_token_id, tok.mask_token_id, tok.sep_token_id) == (n + 2, n + 3, n + 4)
    assert len(tok) == n + 8


def test_gpt2_round_trip_and_glm_input_format(gpt2):
    tok, n = gpt2
    words = fixture_words()[:40]
    text = " ".join(words)
    enc = tok(text)
    assert enc.input_ids[0] == n + 2 and enc.input_ids[-1] == tok.eos_token_id  # [CLS] ... <|endoftext|>
    assert tok.decode(enc.input_ids, skip_special_tokens=True).strip() == text
    masked = tok("the answer is [MASK] .").input_ids
    assert masked.count(n + 3) == 1  # [MASK] is one command token, not pieces of "[", "MASK", "]"
    assert tok.decode(tok("a [sMASK] b [gMASK]").input_ids).count("MASK]") == 2
    split = tok(words[:5], is_split_into_words=True)
    ids = split.word_ids()
    assert ids[0] is None and ids[-1] is None and sorted(set(ids[1:-1])) == [0, 1, 2, 3, 4]


def test_spm_command_token_ids_follow_the_original(tmp_path):
    import sentencepiece as spm

    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(" ".join(fixture_words()[i:i + 8]) for i in range(0, 400, 8)) + "\n")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "tokenizer"), vocab_size=200, hard_vocab_limit=False,
                                   model_type="unigram", character_coverage=1.0, minloglevel=2)
    tok = load_tokenizer(tmp_path, "spm")
    n = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model")).get_piece_size()
    # GLM's ChineseSPTokenizer(add_block_symbols=True, add_task_mask=True), GLM-Large-Chinese layout
    want = {"<|endoftext|>": n, "[SEP]": n + 1, "[CLS]": n + 2, "[MASK]": n + 3, "[UNK]": n + 4,
            "<|startofpiece|>": n + 6, "<|endofpiece|>": n + 7, "[sMASK]": n + 8, "[gMASK]": n + 9}
    assert {t: tok.convert_tokens_to_ids(t) for t in want} == want
    assert tok.pad_token_id == n and tok.cls_token_id == n + 2
    sentence = " ".join(fixture_words()[10:20])
    enc = tok(sentence).input_ids
    assert enc[0] == n + 2 and enc[-1] == n
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    assert enc[1:-1] == sp.encode(sentence)  # the same pieces as sentencepiece itself
    assert tok.decode(enc, skip_special_tokens=True) == sentence


def test_missing_tokenizer_files_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="has no merges.txt"):
        (tmp_path / "vocab.json").write_text("{}")
        load_tokenizer(tmp_path, "gpt2")
