"""A tiny, deterministic tokenizer built locally, so tiny models never need the Hub.

It is a byte-level BPE in exactly the pipeline of transformers' `Qwen2Tokenizer` (NFC, Qwen's split
regex, byte-level pre-tokenizer and decoder, plain BPE). That matters: on reload, AutoTokenizer
forces `Qwen2Tokenizer` for Qwen model types (qwen2, qwen2_vl, qwen2_5_vl, qwen2_5_omni, ...) and
rebuilds the pipeline from the saved vocab and merges alone, so any other pipeline would come back
tokenising differently. The merges are learnt here from a small word list (in lower case and
capitalised, with and without a leading space), so every listed word is one token ("word-level"
for the vocabulary) and any other text falls back to smaller pieces, down to bytes: nothing is ever
unknown. Special tokens are added tokens that never split. Nothing is implicitly prepended or
appended: chat templates write `bos_token` themselves, which keeps the tokenisation of a rendered
prefix a prefix of the whole conversation's (the label spans rely on that).
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

UNK = "<unk>"
SPACE = "\u0120"  # the byte-level alphabet's stand-in for " "
#: the split regex of Qwen2Tokenizer (letters with one optional leading non-letter, single digits, ...)
QWEN_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"""
    r"""\s+(?!\S)|\s+"""
)

DEFAULT_WORDS: tuple[str, ...] = tuple(
    """
    a an the this that these those is are was were be been it its there here what which who where when
    how why many much do does did can could will would should not no yes and or of in on at to from
    with by for as than then if else all any some each every one two three four five six seven eight
    nine ten zero first second third last left right top bottom middle center above below behind front
    next near far big small large tiny long short tall round square circle triangle rectangle star
    shape shapes color colour colors red green blue yellow orange purple pink black white gray grey
    brown image picture photo video frame frames audio sound clip scene object objects thing things
    count number more less most least same different answer question describe show shows see seen
    look looks contain contains containing inside outside between together only also very
    cat dog bird car tree house man woman person people ball box cup table chair sky water
    move moving moves moved stops starts up down user assistant system you i me my your we they he she
    please tell give word words sentence text chart bar line value values total sum plus minus times
    equals true false because so but have has had
    """.split()
)


def build_tokenizer(
    special_tokens: Sequence[str],
    chat_template: str,
    words: Sequence[str] = DEFAULT_WORDS,
    bos: str | None = "<s>",
    eos: str = "</s>",
    pad: str = "<pad>",
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer whose merges make each of `words` one token, with special tokens.

    Ids are a pure function of the arguments: pad, unk, bos, eos, the special tokens in order, the
    256 byte symbols, then the merged symbols in the order they were learnt.
    """
    named = [pad, UNK] + ([bos] if bos else []) + [eos]
    specials = list(dict.fromkeys(named + list(special_tokens)))
    merges = _learn_merges(tuple(words))
    symbols = specials + sorted(pre_tokenizers.ByteLevel.alphabet()) + [a + b for a, b in merges]
    vocab = {symbol: index for index, symbol in enumerate(dict.fromkeys(symbols))}

    backend = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=list(merges),
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=UNK,
        extra_special_tokens=[t for t in specials if t not in named],
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    tokenizer.chat_template = chat_template
    return tokenizer


@lru_cache(maxsize=8)
def _learn_merges(words: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Greedy BPE over the word variants until each is one symbol; ties go to the smallest pair.

    A deterministic re-implementation (the `tokenizers` trainer breaks ties by hash order).
    """
    for word in words:
        if not (word.isascii() and word.isalpha()):
            raise ValueError(f"tiny tokenizer words must be ASCII letters, got {word!r}")
    variants = sorted({p + v for w in words for v in (w.lower(), w.capitalize()) for p in ("", SPACE)})
    pieces = [list(v) for v in variants if len(v) > 1]
    counts: Counter[tuple[str, str]] = Counter()
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for index, piece in enumerate(pieces):
        for pair in pairwise(piece):
            counts[pair] += 1
            where[pair].add(index)
    heap = [(-n, pair) for pair, n in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    done: set[tuple[str, str]] = set()
    while heap:
        negative, pair = heapq.heappop(heap)
        if pair in done or counts[pair] != -negative or negative == 0:
            continue  # stale heap entry
        done.add(pair)
        merges.append(pair)
        for index in sorted(where.pop(pair, ())):
            old = pieces[index]
            new = _merge(old, pair)
            for p in pairwise(old):
                counts[p] -= 1
                where[p].discard(index)
            for p in pairwise(new):
                counts[p] += 1
                where[p].add(index)
            pieces[index] = new
            for p in set(pairwise(new)) | set(pairwise(old)):
                if counts[p] > 0 and p not in done:
                    heapq.heappush(heap, (-counts[p], p))
    return tuple(merges)


def _merge(piece: list[str], pair: tuple[str, str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(piece):
        if i + 1 < len(piece) and (piece[i], piece[i + 1]) == pair:
            out.append(piece[i] + piece[i + 1])
            i += 2
        else:
            out.append(piece[i])
            i += 1
    return out
