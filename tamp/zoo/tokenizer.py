"""The zoo model's word-level tokenizer and chat template, built locally with `tokenizers`.

Every word the zoo can ask or answer is one token (`tamp.zoo.tasks.vocabulary()`), so an answer is
a single token followed by `</s>`: exact match and multiple choice score the same decision. The
pre-tokenizer splits exactly like `tamp.zoo.tasks.tokenize` (words, then single punctuation marks);
special tokens never split and are never normalised. A LLaVA checkpoint reloads its tokenizer.json
unchanged (the saved class is the generic fast tokenizer), so word level needs no Qwen-style care.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tamp.zoo.tasks import IMAGE_TOKEN, vocabulary

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS: tuple[str, ...] = (PAD, UNK, BOS, EOS, IMAGE_TOKEN)
#: the words of the chat template besides the specials
TEMPLATE_WORDS: tuple[str, ...] = ("USER", "ASSISTANT", ":")
# A turn's text parts first, then its media: "USER: q\n<image> ASSISTANT: a</s>" (LLaVA-1.5's words,
# the question before the image). Causal attention then lets every image token see the question,
# so "is this the object asked about?" is decided in the image tokens themselves; with the image
# first, a 1M-parameter model learned questions that bind attributes (the colour of the square)
# several times more slowly. Training, calibration and lmms-eval all render through this template.
_PARTS = (
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}"
    "{% for p in m['content'] %}{% if p['type'] == 'image' %}{{ '\\n' }}" + IMAGE_TOKEN + "{% endif %}{% endfor %}"
    "{% endif %}"
)
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}" + _PARTS + " "
    "{% elif m['role'] == 'user' %}USER: " + _PARTS + " "
    "{% else %}ASSISTANT: " + _PARTS + "{{ eos_token }} {% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
_SPLIT = r"\w+|[^\w\s]"  # tamp.zoo.tasks.tokenize, applied after a whitespace split


def zoo_words(words: Sequence[str] | None = None) -> list[str]:
    """The vocabulary in id order after the specials: template words, then the zoo's sorted words."""
    return list(dict.fromkeys([*TEMPLATE_WORDS, *(vocabulary() if words is None else words)]))


def build_tokenizer(words: Sequence[str] | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: ids are the specials, then `zoo_words()`; unknown words map to <unk>."""
    vocab = {token: i for i, token in enumerate(dict.fromkeys([*SPECIALS, *zoo_words(words)]))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated")]
    )
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # words joined by spaces
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens=[IMAGE_TOKEN],
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
