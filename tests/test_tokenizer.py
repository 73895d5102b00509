"""jaxdiff's CLIP tokenizer against transformers' CLIPTokenizer and open_clip's pure-Python
SimpleTokenizer, on the real CLIP vocabulary shipped with jaxdiff."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest

from jaxdiff.tokenizer import (
    BOS,
    EOS,
    default_tokenizer,
    default_vocabulary,
    load_tokenizer,
    write_vocabulary,
)
from jaxdiff.validation import InputError

transformers = pytest.importorskip("transformers")

_HANDWRITTEN = [
    "", " ", "   \t\n  ", "a", "A", "a red circle", "a blue square left of a green triangle",
    "a yellow triangle above a white circle", "A photo of an astronaut riding a horse on Mars",
    "a photograph of an astronaut riding a horse", "HELLO WORLD", "hello, world!", "wow!!!",
    "what?!?", "...", "a...b", "(parentheses) [brackets] {braces} <angles>", "a-b_c/d\\e|f",
    "@user #hashtag $100 %50 ^caret &amp; *star", "1", "12", "123456789", "3.14159",
    "1,000,000", "2024-01-31", "10:45pm", "v1.5 vs v2.1", "x^2 + y^2 = z^2", "a=b;c:d",
    "don't", "DON'T", "it's", "we'll", "they're", "I've", "I'm", "she'd", "o'clock", "rock'n'roll",
    "'quoted'", "\"double quoted\"", "`backticks`", "~tilde~", "tab\tseparated\twords",
    "new\nline", "multiple     spaces", "  leading and trailing  ", "café", "naïve", "Ångström",
    "Straße", "façade", "jalapeño", "crème brûlée", "Zürich", "São Paulo", "Łódź", "İstanbul",
    "Ελληνικά", "русский текст", "日本語のテキスト", "東京タワー", "中文字符", "한국어",
    "עברית", "العربية", "हिन्दी", "ไทย", "tiếng Việt", "😀", "😀😀😀", "👍🏽", "👨‍👩‍👧‍👦",
    "🇫🇷 flag", "cat 🐱 and dog 🐶", "✨ sparkles ✨", "★☆♥♦", "→ ← ↑ ↓", "°C and °F",
    "½ ¼ ¾", "α β γ", "∑ ∫ √ ∞", "©®™", "€ £ ¥", "e\u0301 decomposed", "ﬁ ligature",
    "ＦＵＬＬＷＩＤＴＨ", "“curly quotes”", "‘single curly’", "em—dash – en", "ellipsis…",
    "non\u00a0breaking space", "zero\u200bwidth", "<|startoftext|>", "<|endoftext|>",
    "text <|endoftext|> more", "a <|startoftext|> b", "<|ENDOFTEXT|>", "!", "!!", "a ! b",
    "masterpiece, best quality, 8k, ultra detailed, (highly detailed:1.2)",
    "portrait of a woman, oil painting, by greg rutkowski and alphonse mucha, trending on artstation",
    "https://example.org/path?q=1&r=2", "user@example.org", "C:\\Users\\name", "#FF00FF",
    "snake_case_name", "camelCaseName", "UPPER_CASE", "MiXeD cAsE", "a1b2c3", "42nd street",
    "the 1990s", "R2-D2 and C-3PO", "tl;dr", "x" * 200, "ab" * 90, "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis", "a " * 80, " ".join(str(i) for i in range(90)),
    ", ".join(["a beautiful landscape"] * 20), "!" * 100, "😀" * 80,
]


def _random_strings(n: int, seed: int) -> list[str]:
    pool = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789     ,.;:!?'\"-()"
            "éüßñçøåÆ日本語中文русÄÖ😀🐱✨αβ€°½\t\n")
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, 120))) for _ in range(n)]


def _prompt_like_strings(n: int, seed: int) -> list[str]:
    words = ["a", "the", "red", "Blue", "circle", "square", "triangle", "left", "of", "above",
             "photo", "painting", "4k", "(detailed)", "cat's", "don't", "café", "東京", "🐶",
             "sunset,", "over", "mountains!", "--ar", "16:9", "highly-detailed"]
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 100))) for _ in range(n)]


TEXTS = _HANDWRITTEN + _random_strings(60, seed=0) + _prompt_like_strings(60, seed=1)


@pytest.fixture(scope="module")
def sd1_folder(tmp_path_factory) -> Path:
    return write_vocabulary(tmp_path_factory.mktemp("sd1_tokenizer"))


@pytest.fixture(scope="module")
def open_clip_tokenizer_module():
    """open_clip/tokenizer.py loaded on its own: the package's __init__ needs torchvision."""
    pytest.importorskip("ftfy")
    pytest.importorskip("torch")
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("_open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _transformers_ids(folder: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    ref = transformers.CLIPTokenizer.from_pretrained(str(folder))
    out = ref(texts, padding="max_length", max_length=77, truncation=True, return_tensors="np")
    return out["input_ids"], out["attention_mask"]


def test_there_are_at_least_200_varied_strings():
    assert len(set(TEXTS)) >= 200
    assert any(len(t.split()) > 75 for t in TEXTS)  # over-long prompts are truncated


def test_ids_equal_transformers_clip_tokenizer_from_vocab_and_merges(sd1_folder):
    ids, mask = load_tokenizer(sd1_folder)(TEXTS)
    ref_ids, ref_mask = _transformers_ids(sd1_folder, TEXTS)
    assert ids.dtype == np.int32 and ids.shape == (len(TEXTS), 77)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(mask, ref_mask)


def test_default_tokenizer_equals_the_folder_one(sd1_folder):
    np.testing.assert_array_equal(default_tokenizer()(TEXTS)[0], load_tokenizer(sd1_folder)(TEXTS)[0])


def test_shipped_vocabulary_is_open_clips_encoder(open_clip_tokenizer_module):
    """The vocab.json layout gives every token the id open_clip gives it (open_clip names the
    special tokens <start_of_text> / <end_of_text>)."""
    vocab, _ = default_vocabulary()
    theirs = dict(open_clip_tokenizer_module.SimpleTokenizer().encoder)
    theirs[BOS] = theirs.pop("<start_of_text>")
    theirs[EOS] = theirs.pop("<end_of_text>")
    assert vocab == theirs


def test_ids_equal_open_clip_simple_tokenizer(open_clip_tokenizer_module):
    """open_clip first cleans the text with ftfy and HTML unescaping (transformers does not):
    on its cleaned text the ids agree for every string, and on the raw text wherever cleaning
    changes nothing. open_clip pads with 0 where transformers pads with the pad token."""
    simple = open_clip_tokenizer_module.SimpleTokenizer()
    clean = open_clip_tokenizer_module._clean_lower
    # open_clip knows only its own names for the special tokens
    texts = [t for t in TEXTS if "<|" not in t]
    ours = default_tokenizer()
    theirs = simple(texts, context_length=77).numpy()
    ids, mask = ours([clean(t) for t in texts])
    np.testing.assert_array_equal(np.where(mask == 1, ids, 0), theirs)
    unchanged = [i for i, t in enumerate(texts) if clean(t) == " ".join(t.split()).lower()]
    assert len(unchanged) >= 200
    raw_ids, raw_mask = ours([texts[i] for i in unchanged])
    np.testing.assert_array_equal(np.where(raw_mask == 1, raw_ids, 0), theirs[unchanged])


def test_truncation_keeps_end_of_text_last():
    ids, mask = default_tokenizer()(["word " * 200, "a cat"])
    assert ids[0, 0] == 49406 and ids[0, -1] == 49407 and mask[0].all()
    np.testing.assert_array_equal(ids[0, 1:-1], np.full(75, ids[0, 1]))
    assert mask[1].sum() == 4 and (ids[1, 4:] == 49407).all()


def test_sd2_pad_token_from_tokenizer_config(sd1_folder, tmp_path):
    """SD 2 folders pad with "!" (id 0); as in transformers, a "!" in the prompt is then the
    special pad token too (id 0 instead of 256)."""
    folder = write_vocabulary(tmp_path / "sd2", pad_token="!")
    ids, mask = load_tokenizer(folder)(TEXTS)
    ref_ids, ref_mask = _transformers_ids(folder, TEXTS)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(mask, ref_mask)
    ids, _ = load_tokenizer(folder)(["wow!", "a cat"])
    assert ids[0, 2] == 0 and (ids[1, 4:] == 0).all()
    assert default_tokenizer(pad_token="!")(["wow!"])[0][0, 2] == 0


@pytest.mark.parametrize("pad_token", [EOS, "!"])
def test_tokenizer_json_saved_by_transformers_loads(sd1_folder, tmp_path, pad_token):
    ref = transformers.CLIPTokenizer.from_pretrained(str(sd1_folder), pad_token=pad_token)
    ref.save_pretrained(str(tmp_path))
    assert (tmp_path / "tokenizer.json").is_file() and not (tmp_path / "vocab.json").exists()
    ids, mask = load_tokenizer(tmp_path)(TEXTS)
    ref_out = ref(TEXTS, padding="max_length", max_length=77, truncation=True, return_tensors="np")
    np.testing.assert_array_equal(ids, ref_out["input_ids"])
    np.testing.assert_array_equal(mask, ref_out["attention_mask"])


def test_pipeline_folder_and_added_token_dicts_are_read(tmp_path):
    """A pipeline folder's tokenizer/ is found, and special tokens written as AddedToken objects
    (as older transformers saved them) are read."""
    folder = write_vocabulary(tmp_path / "tokenizer")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["pad_token"] = {"__type": "AddedToken", "content": "!", "lstrip": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tok = load_tokenizer(tmp_path)
    assert tok.pad_token_id == 0 and tok.model_max_length == 77


def test_decode_gives_the_normalised_words():
    tok = default_tokenizer()
    ids, mask = tok(["A CAT's toy!! café 😀"])
    assert tok.decode(ids[0][mask[0] == 1]) == "a cat 's toy !! café 😀"


def test_bad_input_is_refused(tmp_path):
    tok = default_tokenizer()
    with pytest.raises(InputError, match="max_length"):
        tok(["a"], max_length=78)
    with pytest.raises(InputError, match="list of strings"):
        tok(["a", 3])
    with pytest.raises(InputError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    assert tok([], max_length=10)[0].shape == (0, 10)
