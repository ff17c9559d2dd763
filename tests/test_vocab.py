import json

import pytest

from rnnlab.data.vocab import EOS, UNK, Vocab, tokenize
from rnnlab.errors import UserError

TEXT = "héllo wörld ✓\n日本語 text\nhéllo again\n"


def test_char_round_trip_non_ascii():
    vocab = Vocab.build(TEXT, "char")
    assert vocab.decode(vocab.encode(TEXT)) == TEXT
    assert len(vocab) == len(set(TEXT)) + 1  # + <unk>
    assert vocab.itos[0] == UNK


def test_word_round_trip_and_eos_per_line():
    vocab = Vocab.build(TEXT, "word")
    ids = vocab.encode(TEXT)
    assert vocab.decode(ids) == TEXT
    assert (ids == vocab.eos_id).sum() == 3
    # 6 distinct words (héllo twice) + <unk> + <eos>
    assert len(vocab) == 8
    assert len(ids) == 3 + 2 + 2 + 3  # words per line + one <eos> each


def test_missing_final_newline_counts_like_present():
    assert tokenize("a b\nc", "word") == tokenize("a b\nc\n", "word") == ["a", "b", EOS, "c", EOS]


def test_unknown_tokens_map_to_unk():
    vocab = Vocab.build("abc", "char")
    assert vocab.encode("abz").tolist() == [vocab.stoi["a"], vocab.stoi["b"], vocab.unk_id]
    assert vocab.unknown_tokens("azbzy") == ["z", "y"]
    ids, unknown = vocab.encode_counting("azbzy")
    assert unknown == 3 and (ids == vocab.unk_id).sum() == 3
    words = Vocab.build("the cat\n", "word")
    assert words.encode("the dog\n").tolist() == [words.stoi["the"], words.unk_id, words.eos_id]
    assert words.decode(words.encode("the dog\n")) == "the <unk>\n"
    # a corpus that spells <unk> itself (as WikiText-2 does) maps it without counting it unknown
    assert words.encode_counting("<unk> dog\n")[1] == 1


def test_min_freq_and_max_size():
    text = "a a a b b c\n"
    assert Vocab.build(text, "word", min_freq=2).itos == [UNK, EOS, "a", "b"]
    assert Vocab.build(text, "word", max_size=3).itos == [UNK, EOS, "a"]
    with pytest.raises(UserError, match="min_freq"):
        Vocab.build(text, "word", min_freq=0)


def test_json_round_trip():
    vocab = Vocab.build(TEXT, "word")
    restored = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored == vocab
    assert restored.encode(TEXT).tolist() == vocab.encode(TEXT).tolist()


def test_unknown_level_is_one_sentence():
    with pytest.raises(
        UserError, match="unknown tokenization level 'byte'; use one of: char, word"
    ):
        Vocab.build("abc", "byte")
