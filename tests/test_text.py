"""Tests of tf_recurrent_seg.text: expectations are derived by hand from the reference rules."""

import json
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf

from tf_recurrent_seg import text
from tf_recurrent_seg.data import pipeline
from tf_recurrent_seg.text import (
    EOS,
    GO,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    UNK_ID,
    Vocabulary,
    build_vocabulary,
    tokenize,
)

SMALL_TOKENS = [PAD, GO, EOS, UNK, "the", "man", "left", ",", "on"]  # ids 0..8


@pytest.fixture
def small_vocab() -> Vocabulary:
    return Vocabulary(SMALL_TOKENS)


def _write(path, content: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(content)


# --- constants --------------------------------------------------------------------------------------


def test_special_tokens_and_ids():
    assert SPECIAL_TOKENS == ("<pad>", "<go>", "<eos>", "<unk>")
    assert (PAD, GO, EOS, UNK) == SPECIAL_TOKENS
    assert (text.PAD_ID, text.GO_ID, text.EOS_ID, text.UNK_ID) == (0, 1, 2, 3)


# --- tokenize ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sentence, expected",
    [
        ("The man, on the LEFT.", ["the", "man", ",", "on", "the", "left"]),
        # "'" is a non-word separator: "man" | "'" | "s" | " " | "hat"
        ("man's hat", ["man", "'", "s", "hat"]),
        ("t-shirt", ["t", "-", "shirt"]),
        # digits and "_" are word characters
        ("2nd guy_x", ["2nd", "guy_x"]),
        # the separator " ,  " is kept as a token, stripped to ","
        ("left ,  man", ["left", ",", "man"]),
        ("(on left)", ["(", "on", "left", ")"]),
        ("  The   MAN  ", ["the", "man"]),
        # only the LAST "." goes; a "." inside stays
        ("man. left.", ["man", ".", "left"]),
        ("a . b .", ["a", ".", "b"]),
        # ".." is one piece, not a "." token: nothing dropped
        ("the man..", ["the", "man", ".."]),
        # sentence is stripped first, so a space after the final "." does not protect it
        ("the man. ", ["the", "man"]),
        # " . ." is one separator piece -> ". ." (inner space kept), not "."
        ("the man . .", ["the", "man", ". ."]),
        # ASCII \W as in the (Python 2) reference: non-ASCII characters are separators
        ("boy\u2122", ["boy", "\u2122"]),
        ("caf\u00e9", ["caf", "\u00e9"]),
        ("", []),
        ("   ", []),
        (".", []),
        (" . ", []),
    ],
)
def test_tokenize(sentence, expected):
    assert tokenize(sentence) == expected


@pytest.mark.parametrize(
    "sentence, expected",
    [
        # the reference keeps separator pieces unstripped; whitespace-only pieces still go
        ("The man, on the LEFT.", ["the", "man", ", ", "on", "the", "left"]),
        ("left ,  man", ["left", " ,  ", "man"]),
        # " ." is not "." in the reference, so it is not dropped
        ("the man .", ["the", "man", " ."]),
        ("the man.", ["the", "man"]),
    ],
)
def test_tokenize_reference_exact_keeps_pieces_unstripped(sentence, expected):
    assert tokenize(sentence, strip_pieces=False) == expected


def test_tokenize_rejects_non_str():
    with pytest.raises(TypeError):
        tokenize(b"the man")


# --- Vocabulary lookups and encoding -----------------------------------------------------------------


def test_lookups(small_vocab):
    assert len(small_vocab) == 9
    assert small_vocab.tokens == SMALL_TOKENS
    assert small_vocab.token_to_id("man") == 5
    assert small_vocab.token_to_id(",") == 7
    assert small_vocab.token_to_id("woman") == 3
    assert small_vocab.token_to_id("MAN") == 3  # lookups are exact; tokenize lowercases
    assert small_vocab.id_to_token(0) == PAD
    assert small_vocab.id_to_token(8) == "on"
    assert small_vocab.id_to_token(np.int64(6)) == "left"


@pytest.mark.parametrize("bad_id", [9, -1, 100])
def test_id_to_token_out_of_range(small_vocab, bad_id):
    with pytest.raises(ValueError, match=rf"{bad_id}.*0\.\.8"):
        small_vocab.id_to_token(bad_id)


def test_tokens_property_is_a_copy(small_vocab):
    small_vocab.tokens.append("x")
    assert len(small_vocab) == 9


def test_encode(small_vocab):
    ids = small_vocab.encode("The man, on the LEFT.")
    assert ids.dtype == np.int32
    assert ids.shape == (20,)
    assert ids.tolist() == [0] * 14 + [4, 5, 7, 8, 4, 6]


def test_encode_unknown_words_map_to_unk(small_vocab):
    # "woman" and "right" are not in the vocabulary
    assert small_vocab.encode("the woman on the right", max_words=6).tolist() == [0, 4, 3, 8, 4, 3]


def test_encode_truncation_keeps_first_words():
    words = [f"w{i}" for i in range(25)]
    vocab = Vocabulary([*SPECIAL_TOKENS, *words])  # w_i has id 4 + i
    ids = vocab.encode(" ".join(words))
    assert ids.tolist() == list(range(4, 24))
    assert vocab.encode(" ".join(words[:20])).tolist() == list(range(4, 24))  # exactly 20: no pad
    assert vocab.encode(" ".join(words[:3]), max_words=2).tolist() == [4, 5]


def test_encode_left_pads(small_vocab):
    assert small_vocab.encode("man", max_words=5).tolist() == [0, 0, 0, 0, 5]
    assert small_vocab.encode("left man", max_words=3).tolist() == [0, 6, 5]


def test_encode_reference_exact_mode(small_vocab):
    # ", " is not in the vocabulary -> <unk> in the reference
    assert small_vocab.encode("man, left", max_words=4, strip_pieces=False).tolist() == [0, 5, 3, 6]
    assert small_vocab.encode("man, left", max_words=4).tolist() == [0, 5, 7, 6]


@pytest.mark.parametrize("sentence", ["", "   ", ".", " . "])
def test_encode_empty_sentence_raises(small_vocab, sentence):
    with pytest.raises(ValueError, match="no tokens") as info:
        small_vocab.encode(sentence)
    assert repr(sentence) in str(info.value)


@pytest.mark.parametrize("max_words", [0, -3, 2.5, True])
def test_encode_bad_max_words(small_vocab, max_words):
    with pytest.raises(ValueError, match="max_words"):
        small_vocab.encode("man", max_words=max_words)


def test_encode_batch(small_vocab):
    batch = small_vocab.encode_batch(["man", "the left man", "woman"], max_words=4)
    assert batch.dtype == np.int32
    assert batch.tolist() == [[0, 0, 0, 5], [0, 4, 6, 5], [0, 0, 0, 3]]
    assert small_vocab.encode_batch([]).shape == (0, 20)
    assert small_vocab.encode_batch(iter(["man"])).shape == (1, 20)
    with pytest.raises(TypeError):
        small_vocab.encode_batch("the man")
    with pytest.raises(ValueError, match="no tokens"):
        small_vocab.encode_batch(["man", ""])


def test_decode(small_vocab):
    assert small_vocab.decode([0, 0, 4, 5, 3]) == ["the", "man", UNK]
    assert small_vocab.decode(np.array([0, 0, 0], dtype=np.int32)) == []
    with pytest.raises(ValueError, match="9"):
        small_vocab.decode([0, 9])
    with pytest.raises(ValueError, match="1-D"):
        small_vocab.decode(np.zeros((2, 3), dtype=np.int32))


# --- Vocabulary construction, load and save ----------------------------------------------------------


def test_load_small_file(tmp_path):
    path = tmp_path / "vocab.txt"
    _write(path, "<pad>\n<go>\n<eos>\n<unk>\nman\nleft\n")
    vocab = Vocabulary.load(path)
    assert vocab.tokens == [PAD, GO, EOS, UNK, "man", "left"]
    assert vocab.token_to_id("left") == 5


def test_load_without_final_newline_and_crlf(tmp_path):
    plain = tmp_path / "plain.txt"
    crlf = tmp_path / "crlf.txt"
    _write(plain, "<pad>\n<go>\n<eos>\n<unk>\nman")
    _write(crlf, "<pad>\r\n<go>\r\n<eos>\r\n<unk>\r\nman\r\n")
    assert Vocabulary.load(plain).tokens == [PAD, GO, EOS, UNK, "man"]
    assert Vocabulary.load(crlf).tokens == [PAD, GO, EOS, UNK, "man"]


@pytest.mark.parametrize(
    "content",
    [
        "the\nman\n",  # no specials
        "<go>\n<pad>\n<eos>\n<unk>\nman\n",  # wrong order
        "<pad>\n<go>\n<eos>\n",  # too short
        "",
    ],
)
def test_load_missing_specials_raises_naming_file(tmp_path, content):
    path = tmp_path / "broken_vocab.txt"
    _write(path, content)
    with pytest.raises(ValueError) as info:
        Vocabulary.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "<pad>" in message and "<unk>" in message


def test_duplicates(tmp_path):
    path = tmp_path / "dup_vocab.txt"
    _write(path, "<pad>\n<go>\n<eos>\n<unk>\nman\nleft\nman\n")
    # reference behaviour: the last occurrence wins, ids stay line numbers
    vocab = Vocabulary.load(path)
    assert len(vocab) == 7
    assert vocab.token_to_id("man") == 6
    assert vocab.id_to_token(4) == "man"
    with pytest.raises(ValueError) as info:
        Vocabulary.load(path, duplicates="error")
    message = str(info.value)
    assert "'man'" in message and "line 7" in message and "line 5" in message and str(path) in message
    with pytest.raises(ValueError, match="duplicates"):
        Vocabulary.load(path, duplicates="first")


def test_empty_lines_are_placeholders(tmp_path):
    path = tmp_path / "gaps.txt"
    _write(path, "<pad>\n<go>\n<eos>\n<unk>\nman\n\n\nleft\n")
    vocab = Vocabulary.load(path, duplicates="error")  # two empty lines are not duplicates
    assert len(vocab) == 8
    assert vocab.token_to_id("left") == 7
    assert vocab.token_to_id("") == UNK_ID
    assert vocab.id_to_token(5) == ""


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary([*SMALL_TOKENS, "", ". .", "caf\u00e9"])
    path = tmp_path / "out" / "vocab.txt"
    path.parent.mkdir()
    vocab.save(path)
    assert path.read_text(encoding="utf-8") == "\n".join([*SMALL_TOKENS, "", ". .", "caf\u00e9"]) + "\n"
    loaded = Vocabulary.load(path)
    assert loaded.tokens == vocab.tokens
    assert loaded.token_to_id(". .") == 10


@pytest.mark.parametrize("token", [" man", "man ", "a\nb"])
def test_save_rejects_tokens_load_would_change(tmp_path, token):
    with pytest.raises(ValueError, match="cannot be saved"):
        Vocabulary([*SPECIAL_TOKENS, token]).save(tmp_path / "v.txt")


def test_constructor_validation():
    with pytest.raises(ValueError, match="first 4 tokens"):
        Vocabulary(["man"])
    with pytest.raises(TypeError):
        Vocabulary([*SPECIAL_TOKENS, 5])


# --- build_vocabulary --------------------------------------------------------------------------------

CORPUS = ["the dog", "The cat.", "a dog, the cat", "zebra"]
# counts: the 3, cat 2, dog 2, a 1, "," 1, zebra 1 ("." of "The cat." is the dropped final one)


def test_build_vocabulary_order():
    vocab = build_vocabulary(CORPUS)
    # descending count, ties by code point ("," < "a" < "zebra"; "cat" < "dog")
    assert vocab.tokens == [*SPECIAL_TOKENS, "the", "cat", "dog", ",", "a", "zebra"]
    assert build_vocabulary(list(reversed(CORPUS))).tokens == vocab.tokens
    assert vocab.encode("A cat, the dog", max_words=6).tolist() == [0, 8, 5, 7, 4, 6]


def test_build_vocabulary_min_count():
    assert build_vocabulary(CORPUS, min_count=2).tokens == [*SPECIAL_TOKENS, "the", "cat", "dog"]
    assert build_vocabulary(CORPUS, min_count=3).tokens == [*SPECIAL_TOKENS, "the"]
    assert build_vocabulary(CORPUS, min_count=4).tokens == list(SPECIAL_TOKENS)
    assert build_vocabulary([]).tokens == list(SPECIAL_TOKENS)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="min_count"):
            build_vocabulary(CORPUS, min_count=bad)
    with pytest.raises(TypeError):
        build_vocabulary("the dog")


# --- real reference files ----------------------------------------------------------------------------


@pytest.mark.parametrize("name, size", [("vocabulary_Gref.txt", 12112), ("vocabulary_referit.txt", 8803)])
def test_real_vocabularies_load(shared_data_dir, name, size):
    vocab = Vocabulary.load(shared_data_dir / name)
    assert len(vocab) == size
    assert vocab.tokens[:4] == [PAD, GO, EOS, UNK]
    assert [vocab.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    # the released vocabularies hold stripped tokens, which is why tokenize strips separator pieces
    assert vocab.token_to_id(",") != UNK_ID
    assert not any(t != t.strip() for t in vocab.tokens)


def test_real_gref_quirks(shared_data_dir):
    path = shared_data_dir / "vocabulary_Gref.txt"
    vocab = Vocabulary.load(path)
    # "." is on lines 512 and 6109; the reference dict keeps the last id
    assert vocab.id_to_token(511) == vocab.id_to_token(6108) == "."
    assert vocab.token_to_id(".") == 6108
    assert [i for i, t in enumerate(vocab.tokens) if t == ""] == [1432, 5814, 5985, 11855, 11898]
    with pytest.raises(ValueError, match=r"'\.'.*line 6109.*line 512"):
        Vocabulary.load(path, duplicates="error")


@pytest.mark.parametrize("name", ["vocabulary_Gref.txt", "vocabulary_referit.txt"])
def test_real_vocabulary_save_is_byte_identical(shared_data_dir, tmp_path, name):
    source = shared_data_dir / name
    vocab = Vocabulary.load(source)
    vocab.save(tmp_path / name)
    assert (tmp_path / name).read_bytes() == source.read_bytes()
    assert Vocabulary.load(tmp_path / name).tokens == vocab.tokens


def test_real_referit_queries_encode(shared_data_dir):
    vocab = Vocabulary.load(shared_data_dir / "vocabulary_referit.txt")
    with open(shared_data_dir / "referit_query_val.json", encoding="utf-8") as f:
        queries = json.load(f)
    sentences = [sentence for expressions in queries.values() for sentence in expressions]
    assert len(sentences) > 5000

    ids = vocab.encode_batch(sentences)
    assert ids.shape == (len(sentences), 20)
    assert ids.dtype == np.int32
    assert ids.min() >= 0 and ids.max() < len(vocab)
    nonpad = ids != 0
    assert nonpad.any(axis=1).all()  # no all-pad row
    # left padding: once a row has a non-pad id, every later id is non-pad
    assert (np.maximum.accumulate(nonpad, axis=1) == nonpad).all()
    # the number of non-pad ids is the token count, capped at 20
    lengths = np.array([min(len(tokenize(s)), 20) for s in sentences])
    assert (nonpad.sum(axis=1) == lengths).all()

    # unknown rate over real tokens: 3.1% with stripped pieces, 4.8% with the reference's unstripped ones
    unk_rate = (ids == UNK_ID).sum() / nonpad.sum()
    assert 0 < unk_rate < 0.05
    reference_ids = vocab.encode_batch(sentences, strip_pieces=False)
    reference_unk_rate = (reference_ids == UNK_ID).sum() / (reference_ids != 0).sum()
    assert unk_rate < reference_unk_rate < 0.06

    # one expression by hand: "9739_7" -> "right black bag", all in the vocabulary
    (sentence,) = queries["9739_7"]
    row = vocab.encode(sentence)
    assert vocab.decode(row) == ["right", "black", "bag"]
    assert (row[:17] == 0).all() and (row[17:] != UNK_ID).all()


# --- the authors' text processing on every ReferItGame val query ---------------------------------------

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"  # beside the development checkout
REFERIT_QUERIES = SHARED_DATA / "referit_query_val.json"
REFERIT_VOCABULARY = SHARED_DATA / "vocabulary_referit.txt"

# The RMI authors' split (their text processing for ReferIt and RefCOCO, Python 2): `(\W+)` keeping the
# separators; Python 2's `re` without re.UNICODE makes `\W` ASCII-only, hence re.ASCII here.
_AUTHORS_SPLIT = re.compile(r"(\W+)", re.ASCII)


def _authors_vocab_dict(path: pathlib.Path) -> dict[str, int]:
    """Line n, stripped, has id n; a repeated token keeps its last line (their dict comprehension)."""
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    return {token: n for n, token in enumerate(lines)}


def _authors_pieces(sentence: str, strip_pieces: bool = False) -> list[str]:
    """Split the stripped sentence, lowercase, drop pieces that are empty once stripped, drop a final ".".
    `strip_pieces=True` adds the package's deliberate difference (docs/decisions.md#tokenizer-stripping): each
    kept piece is stripped before the final "." check."""
    pieces = [p.lower() for p in _AUTHORS_SPLIT.split(sentence.strip()) if len(p.strip()) > 0]
    pieces = [p.strip() for p in pieces] if strip_pieces else pieces
    return pieces[:-1] if pieces and pieces[-1] == "." else pieces


def _authors_ids(pieces: list[str], vocab_dict: dict[str, int], max_words: int = 20) -> list[int]:
    """Unknown pieces -> <unk>; the first `max_words` ids, left-padded with <pad>."""
    ids = [vocab_dict.get(p, vocab_dict[UNK]) for p in pieces][:max_words]
    return [vocab_dict[PAD]] * (max_words - len(ids)) + ids


def _encode_in_graph(sentences: list[str], vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """`pipeline.encode_tf` ids of all sentences, (strip_pieces=False, strip_pieces=True), in one parallel
    tf.data pass (not one eager call per sentence: this keeps the test fast)."""
    table = pipeline.vocabulary_table(vocab)

    def both(sentence):
        return (
            pipeline.encode_tf(sentence, table, strip_pieces=False)[0],
            pipeline.encode_tf(sentence, table, strip_pieces=True)[0],
        )

    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(sentences))
    unstripped, stripped = next(iter(dataset.map(both, num_parallel_calls=tf.data.AUTOTUNE).batch(len(sentences))))
    return unstripped.numpy(), stripped.numpy()


@pytest.mark.skipif(
    not (REFERIT_QUERIES.exists() and REFERIT_VOCABULARY.exists()),
    reason="the real ReferItGame val queries and vocabulary exist only in ../shared/data beside the development "
    "checkout",
)
def test_encode_follows_the_authors_rule_on_every_referit_val_query():
    vocab = Vocabulary.load(REFERIT_VOCABULARY)
    vocab_dict = _authors_vocab_dict(REFERIT_VOCABULARY)
    with open(REFERIT_QUERIES, encoding="utf-8") as f:
        sentences = [sentence for expressions in json.load(f).values() for sentence in expressions]
    assert len(sentences) == 5842
    authors_pieces = [_authors_pieces(s) for s in sentences]
    authors = np.array([_authors_ids(p, vocab_dict) for p in authors_pieces], np.int32)
    graph_unstripped, graph_stripped = _encode_in_graph(sentences, vocab)

    # strip_pieces=False is the authors' rule, id for id, in numpy and in the graph
    np.testing.assert_array_equal(vocab.encode_batch(sentences, strip_pieces=False), authors)
    np.testing.assert_array_equal(graph_unstripped, authors)

    # the default strips separator pieces: it departs from the authors only on queries where they keep a piece
    # with whitespace around it (", " and the like), which is never in the vocabulary: <unk> for them
    stripped = np.array([_authors_ids(_authors_pieces(s, strip_pieces=True), vocab_dict) for s in sentences], np.int32)
    np.testing.assert_array_equal(vocab.encode_batch(sentences), stripped)
    np.testing.assert_array_equal(graph_stripped, stripped)
    differing = (stripped != authors).any(axis=1)
    spaced = np.array([any(p != p.strip() for p in pieces) for pieces in authors_pieces])
    assert not (differing & ~spaced).any() and (authors[differing] == UNK_ID).any(axis=1).all()
    # 306 queries hold such pieces; 8 of them change no id, their stripped pieces ("*", "...", ":)", ...)
    # being unknown too
    assert (spaced.sum(), differing.sum()) == (306, 298)
