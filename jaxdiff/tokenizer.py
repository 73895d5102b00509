"""The CLIP tokenizer (Radford et al. 2021) of Stable Diffusion's text encoders, on HF `tokenizers`.

Byte-level BPE with an end-of-word suffix `</w>`: the text is NFC-normalised, runs of whitespace
become one space, everything is lower-cased, CLIP's regular expression splits it into words,
numbers digit by digit and runs of other symbols, each piece is BPE-encoded, and the sequence is
framed by `<|startoftext|>` ... `<|endoftext|>`. Prompts are truncated to `max_length` (77) tokens
(the end-of-text token kept last) and padded with the pad token, as diffusers' pipelines call
transformers' `CLIPTokenizer` (`padding="max_length", truncation=True`). The special tokens,
the pad token included, are matched in the text before normalisation, as transformers does: with
SD 2's pad token "!" a "!" in a prompt becomes the pad id.

Sources: a pipeline folder's `tokenizer/` (`tokenizer.json`, or `vocab.json` + `merges.txt`, with
`tokenizer_config.json` / `special_tokens_map.json`), or the vocabulary shipped with jaxdiff
(`default_tokenizer`, no download; `write_vocabulary` lays it out as vocab.json + merges.txt).

Example:
  >>> tok = default_tokenizer()
  >>> ids, mask = tok(["a red circle"])
  >>> ids.shape, ids[0, :5].tolist(), int(mask.sum())
  ((1, 77), [49406, 320, 736, 7117, 49407], 5)
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from jaxdiff.validation import InputError

MODEL_MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_ASSET = "bpe_simple_vocab_16e6.txt.gz"
_NUM_MERGES = 49152 - 256 - 2  # the merges CLIP uses: 49408 tokens = 2 * 256 bytes + merges + 2
# CLIP's split: the special tokens, English contractions, letter runs, single digits, and runs of
# anything else that is not whitespace.
_CLIP_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"


def _byte_symbols() -> list[str]:
    """The 256 printable characters that stand for the bytes 0..255 in byte-level BPE, in vocabulary
    order: bytes that are printable Latin-1 characters stand for themselves and come first; the
    others (control characters, space, soft hyphen) are mapped to U+0100 onwards in byte order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    kept = set(printable)
    others = [b for b in range(256) if b not in kept]
    return [chr(b) for b in printable] + [chr(0x100 + i) for i in range(len(others))]


def default_vocabulary() -> tuple[dict[str, int], list[str]]:
    """(vocab token -> id, merges as "a b" lines) of the CLIP vocabulary shipped with jaxdiff.

    Ids: the 256 byte symbols, the same with `</w>`, one token per merge in merge order, then
    `<|startoftext|>` (49406) and `<|endoftext|>` (49407).
    """
    with resources.files("jaxdiff").joinpath("assets", _ASSET).open("rb") as f:
        lines = gzip.decompress(f.read()).decode("utf-8").split("\n")
    merges = lines[1:1 + _NUM_MERGES]  # line 0 is a version header
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in merges]
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_vocabulary(folder: str | Path, *, pad_token: str = EOS) -> Path:
    """Writes the shipped vocabulary as a transformers tokenizer folder: vocab.json, merges.txt,
    tokenizer_config.json (model_max_length 77, the given pad token) and special_tokens_map.json.
    Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = default_vocabulary()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                       encoding="utf-8")
    special = dict(bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=pad_token)
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = dict(special, model_max_length=MODEL_MAX_LENGTH, tokenizer_class="CLIPTokenizer")
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder


def _clip_tokenizer(vocab: dict[str, int], merges: Sequence, *, bos: str, eos: str, unk: str):
    """A `tokenizers.Tokenizer` with CLIP's normalizer, pre-tokenizer, BPE model and framing."""
    from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    pairs = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    tok = Tokenizer(BPE(vocab=vocab, merges=pairs, continuing_subword_prefix="",
                        end_of_word_suffix="</w>", unk_token=unk, fuse_unk=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    specials = "|".join(re.escape(t) for t in (bos, eos))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(f"{specials}|{_CLIP_SPLIT}"), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    ids = {}
    for token in (bos, eos):
        if token not in vocab:
            raise InputError(f"special token {token!r} is not in the vocabulary")
        ids[token] = vocab[token]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=list(ids.items()))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in dict.fromkeys((bos, eos, unk))])
    return tok


def _token_name(value, default: str) -> str:
    """A special token from tokenizer_config.json: a string or an AddedToken dict."""
    if value is None:
        return default
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    if isinstance(value, str):
        return value
    raise InputError(f"special token {value!r} in the tokenizer config is neither a string nor "
                     f"an object with a 'content' string")


class CLIPTokenizer:
    """Prompts -> fixed-length CLIP token ids, as diffusers' pipelines tokenize them.

    Args:
      tokenizer: a `tokenizers.Tokenizer` with CLIP's pipeline (from `load_tokenizer`,
        `default_tokenizer` or `tokenizers.Tokenizer.from_file` of a tokenizer.json).
      pad_token, bos_token, eos_token: special tokens; the pad token is added as a special token
        when it is not one already (SD 1 pads with "<|endoftext|>", SD 2 with "!").
      model_max_length: the longest `max_length` accepted (the text encoder's positions).
    """

    def __init__(self, tokenizer, *, pad_token: str = EOS, bos_token: str = BOS,
                 eos_token: str = EOS, model_max_length: int = MODEL_MAX_LENGTH):
        from tokenizers import AddedToken, decoders

        self._tokenizer = tokenizer
        tokenizer.no_padding()  # a saved tokenizer.json may carry settings of its own
        tokenizer.no_truncation()
        # bytes back to text first (the `</w>` suffix is plain ASCII, which byte-level decoding
        # keeps), then each end of word becomes a space
        tokenizer.decoder = decoders.Sequence([
            decoders.ByteLevel(), decoders.Replace("</w>", " "), decoders.Strip(" ", 0, 1)])
        ids = {}
        for what, token in (("pad", pad_token), ("bos", bos_token), ("eos", eos_token)):
            ids[what] = tokenizer.token_to_id(token)
            if ids[what] is None:
                raise InputError(f"{what} token {token!r} is not in the tokenizer's vocabulary")
        tokenizer.add_special_tokens([AddedToken(pad_token, special=True, normalized=False)])
        self.pad_token, self.pad_token_id = pad_token, ids["pad"]
        self.bos_token_id, self.eos_token_id = ids["bos"], ids["eos"]
        self.model_max_length = int(model_max_length)
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    def __call__(self, texts: Sequence[str] | str, max_length: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Tokenizes a batch of prompts.

        Args:
          texts: B prompts (a single string is a batch of one).
          max_length: tokens per prompt, BOS and EOS included (default model_max_length, 77).

        Returns:
          ids: int32 (B, max_length): BOS, the prompt's tokens (truncated to max_length - 2),
            EOS, then the pad id.
          attention_mask: int32 (B, max_length), 1 on BOS..EOS, 0 on padding.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
            raise InputError(f"texts must be a list of strings; got {type(texts).__name__} "
                             f"{texts!r:.200}")
        length = self.model_max_length if max_length is None else max_length
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or not (
                2 <= length <= self.model_max_length):
            raise InputError(f"max_length must be an integer in [2, {self.model_max_length}] "
                             f"(BOS and EOS included); got {max_length!r}")
        tok = self._tokenizer
        if (tok.truncation or {}).get("max_length") != length or tok.padding is None or (
                tok.padding.get("length") != length):
            tok.enable_truncation(max_length=int(length))
            tok.enable_padding(length=int(length), pad_id=self.pad_token_id,
                               pad_token=self.pad_token)
        encodings = tok.encode_batch(list(texts)) if texts else []
        ids = np.array([e.ids for e in encodings], np.int32).reshape(len(texts), int(length))
        mask = np.array([e.attention_mask for e in encodings], np.int32).reshape(ids.shape)
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> the normalised text, one space after each word or symbol run (special
        tokens left out): "a CAT's toy!!" decodes to "a cat 's toy !!"."""
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def default_tokenizer(pad_token: str = EOS) -> CLIPTokenizer:
    """The CLIP tokenizer on the vocabulary shipped with jaxdiff (no download); pad_token "!"
    gives SD 2's padding."""
    vocab, merges = default_vocabulary()
    return CLIPTokenizer(_clip_tokenizer(vocab, merges, bos=BOS, eos=EOS, unk=EOS),
                         pad_token=pad_token)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read tokenizer file {path}: {err}") from None
    if not isinstance(value, dict):
        raise InputError(f"tokenizer file {path} must hold a JSON object")
    return value


def load_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """The CLIP tokenizer of a pipeline folder (its `tokenizer/`) or of a tokenizer folder.

    Reads `tokenizer.json` when present, else `vocab.json` + `merges.txt`; the special tokens and
    `model_max_length` come from `tokenizer_config.json`, then `special_tokens_map.json`, with
    CLIP's defaults (pad "<|endoftext|>", 77) for what neither names.

    Raises:
      InputError when the folder has neither file set, or a file cannot be read.
    """
    folder = Path(folder)
    if (folder / "tokenizer").is_dir():
        folder = folder / "tokenizer"
    if not folder.is_dir():
        raise InputError(f"tokenizer folder {folder} does not exist")
    names = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
        if (folder / name).is_file():
            names.update({k: v for k, v in _read_json(folder / name).items() if v is not None})
    bos = _token_name(names.get("bos_token"), BOS)
    eos = _token_name(names.get("eos_token"), EOS)
    unk = _token_name(names.get("unk_token"), EOS)
    pad = _token_name(names.get("pad_token"), EOS)
    max_length = names.get("model_max_length", MODEL_MAX_LENGTH)
    if isinstance(max_length, (int, float)) and max_length > 10 ** 6:
        max_length = MODEL_MAX_LENGTH  # transformers' "no limit" sentinel: CLIP has 77 positions
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise InputError(f"model_max_length {max_length!r} in {folder} is not an integer >= 2")
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as err:  # noqa: BLE001 - the Rust library raises plain Exceptions
            raise InputError(f"cannot read {folder / 'tokenizer.json'}: {err}") from None
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        vocab = _read_json(folder / "vocab.json")
        try:
            lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"cannot read {folder / 'merges.txt'}: {err}") from None
        merges = [m for m in lines if m and not m.startswith("#version")]
        tok = _clip_tokenizer(vocab, merges, bos=bos, eos=eos, unk=unk)
    else:
        present = sorted(p.name for p in folder.iterdir())
        raise InputError(f"{folder} has no tokenizer.json and no vocab.json + merges.txt pair; "
                         f"it holds {present}")
    return CLIPTokenizer(tok, pad_token=pad, bos_token=bos, eos_token=eos,
                         model_max_length=max_length)
