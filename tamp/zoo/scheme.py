"""`model.name=zoo[:<recipe>]`: the toy zoo's trained tiny LLaVA, built (or installed) on first use."""

from __future__ import annotations

from tamp.models.named import LoadedModel, ModelSettings, register_scheme


@register_scheme("zoo")
class ZooScheme:
    @staticmethod
    def check(name: str) -> None:
        from tamp.zoo.cache import recipe_of

        recipe_of(name)  # one line naming the valid recipes

    @staticmethod
    def load(name: str, settings: ModelSettings) -> LoadedModel:
        from tamp.zoo.cache import load_zoo

        model, processor, adapter = load_zoo(name, settings.cache_dir, settings.dtype, progress=settings.progress)
        return LoadedModel(model, processor, adapter)
