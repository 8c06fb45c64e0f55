"""The preset name of a composition (pruner x allocation x tokens), for methods composed without one.

`tamp.prune(model, samples, {"method": {"pruner": "wanda", "allocation": {"name": "das"}, "tokens":
{"name": "amia"}}})` builds TAMP, but its config's name defaults to the pruner's: a summary would read
`wanda (wanda x das x amia)`. The presets of conf/method/ name each composition; tests keep this table
equal to them. Compositions several presets share (the modality subsets) have no single name.
"""

from __future__ import annotations

PRESET_NAMES: dict[tuple[str, str, str], str] = {
    ("none", "uniform", "all"): "dense",
    ("magnitude", "uniform", "all"): "magnitude",
    ("wanda", "uniform", "all"): "wanda",
    ("sparsegpt", "uniform", "all"): "sparsegpt",
    ("wanda", "owl", "all"): "owl",
    ("wanda", "ecoflap", "all"): "ecoflap",
    ("wanda", "das", "all"): "das",
    ("wanda", "das_all_token", "all"): "das_all_token",
    ("wanda", "das_block", "all"): "das_block",
    ("sparsegpt", "das", "all"): "das_sparsegpt",
    ("wanda", "uniform", "amia"): "amia",
    ("wanda", "uniform", "attention"): "attention_tokens",
    ("wanda", "uniform", "random"): "random_tokens",
    ("wanda", "das", "amia"): "tamp",
    ("sparsegpt", "das", "amia"): "tamp_sparsegpt",
}


#: presets that run a variant (other settings) of a composition another preset names, or that share one
VARIANT_PRESETS: dict[str, tuple[str, str, str]] = {
    "ecoflap_official": ("wanda", "ecoflap", "all"),
    "magnitude_official": ("magnitude", "uniform", "all"),
    "modality_l": ("wanda", "uniform", "modality"),
    "modality_vl": ("wanda", "uniform", "modality"),
    "modality_vl2_l": ("wanda", "uniform", "modality"),
    "owl_tamp_repository": ("wanda", "owl", "all"),
    "sparsegpt_official": ("sparsegpt", "uniform", "all"),
    "tamp_reference": ("wanda", "das", "amia"),
}
#: every preset of conf/method/ -> its composition (pruner, allocation, tokens); tests keep it equal to them
PRESET_MAKEUP: dict[str, tuple[str, str, str]] = {
    **{name: parts for parts, name in PRESET_NAMES.items()}, **VARIANT_PRESETS,
}


def preset_makeup(name: str) -> tuple[str, str, str] | None:
    """(pruner, allocation, tokens) of the conf/method preset `name`; None when no preset has that name."""
    return PRESET_MAKEUP.get(name)


def preset_name(pruner: str, allocation: str, tokens: str) -> str | None:
    """The conf/method preset of this composition, None when there is none (or several)."""
    return PRESET_NAMES.get((pruner, allocation, tokens))


def display_name(name: str, pruner: str, allocation: str, tokens: str) -> str:
    """The method's own name, unless it is only the pruner's default: then the composition's preset name.

    A name that differs from the pruner was chosen by someone (a preset, the user) and is kept.
    """
    if name and name != pruner:
        return name
    return preset_name(pruner, allocation, tokens) or name or pruner
