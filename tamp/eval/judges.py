"""Benchmarks whose lmms-eval scoring calls an external LLM judge, refused up front when none is set.

Offline, lmms-eval 0.7.3 does not fail on these: it retries the unreachable API (MMBench: 15 tries
with 3 s pauses per reply it cannot parse itself) and then scores a fallback (MMBench a random option letter, MathVista an empty extraction),
so a run looks fine and its numbers are wrong. A judged task therefore needs a judge configured
before evaluation starts (an API key in the environment or in `eval.env`), or one of lmms-eval's
own offline variants in its place; otherwise `check_judges` stops the run with one line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

#: task (or group) -> (what calls the judge, lmms-eval's own offline variant or None)
JUDGED: dict[str, tuple[str, str | None]] = {
    "mmbench_en_dev": ("GPT answer matching when a reply names no option letter", "mmbench_en_dev_static"),
    "mmbench_en_test": ("GPT answer matching when a reply names no option letter", None),
    "mmbench_en": ("GPT answer matching when a reply names no option letter", None),
    **{
        name: (
            "GPT answer extraction for free-form replies (quick_extract is fixed in its mathvista.yaml)",
            None,
        )
        for name in (
            "mathvista",
            "mathvista_testmini",
            "mathvista_testmini_cot",
            "mathvista_testmini_solution",
            "mathvista_testmini_format",
            "mathvista_test",
            "tamp_mathvista_testmini",  # tamp's wrapper of mathvista_testmini_format (tamp/eval/tasks/paper)
        )
    },
}
#: lmms-eval's judges read API_TYPE (default openai) and then this key
JUDGE_KEYS = {"openai": "OPENAI_API_KEY", "azure": "AZURE_API_KEY"}


class JudgeRequiredError(ValueError):
    """A requested task scores through an LLM judge and no judge is configured."""


def judge_configured(env: Mapping[str, str]) -> bool:
    """Whether lmms-eval's judge client would find credentials (API_TYPE picks which key)."""
    key = JUDGE_KEYS.get(env.get("API_TYPE", "openai"))
    return bool(key and env.get(key))


def check_judges(tasks: Iterable[str], env: Mapping[str, str] | None = None) -> None:
    """One-line error naming each judged task, the key to set and any offline variant, before any work."""
    env = os.environ if env is None else env
    judged = [name for name in tasks if name in JUDGED]
    if not judged or judge_configured(env):
        return
    advice = "; ".join(
        f"{name} ({JUDGED[name][0]}): "
        + (f"use {JUDGED[name][1]} offline" if JUDGED[name][1] else "drop it offline")
        for name in judged
    )
    key = JUDGE_KEYS.get(env.get("API_TYPE", "openai"), "OPENAI_API_KEY")
    raise JudgeRequiredError(
        f"eval.tasks score through an LLM judge and {key} is not set (export it; API_TYPE=azure reads "
        f"AZURE_API_KEY): {advice}"
    )
