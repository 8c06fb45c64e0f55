"""Preset names and run labels come from the files of conf/method/ (issue 33.2): no table to keep in step.

A preset file added on Hydra's search path (as the "Extending tamp" page adds one) names its runs by its own
makeup, a swapped component spelt out (`owl_amia+allocation=das`); a new pruner's preset without a `name`
is called by the pruner and labelled the same way. Every shipped preset's makeup, name and variants, as
read from its file, are what Hydra composes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tamp.core.paths import CONF_DIR
from tamp.methods.preset_names import preset_name, presets
from tamp.tracking.run_names import name_of_config, own_variants

pytestmark = pytest.mark.fast  # the unit tier: make test-fast

#: a composition no shipped preset has: OWL's allocation with AMIA's tokens
OWL_AMIA = """\
defaults:
  - allocation: owl
  - tokens: amia
  - _self_

name: owl_amia
pruner: wanda
"""
#: a new pruner's preset, as a pruner walk-through writes it: no `name`, so the pruner's
RIA = """\
defaults:
  - allocation: uniform
  - tokens: all
  - _self_

pruner: ria
"""


def _search_path(tmp_path: Path) -> Path:
    method = tmp_path / "conf" / "method"
    method.mkdir(parents=True)
    (method / "owl_amia.yaml").write_text(OWL_AMIA)
    (method / "ria.yaml").write_text(RIA)
    return tmp_path / "conf"


@pytest.mark.parametrize(("overrides", "label"), [
    (["method=owl_amia"], "owl_amia"),
    (["method=owl_amia", "method.pruner=sparsegpt"], "owl_amia+pruner=sparsegpt"),
    (["method=owl_amia", "method/allocation=das"], "owl_amia+allocation=das"),
    (["method=owl_amia", "method/tokens=random"], "owl_amia+tokens=random"),
    (["method=owl_amia", "method/allocation=uniform", "method/tokens=all"], "owl_amia+allocation=uniform+tokens=all"),
    (["method=ria"], "ria"),
    (["method=ria", "method/allocation=das"], "ria+allocation=das"),
    (["method=ria", "method/tokens=amia"], "ria+tokens=amia"),
])
def test_a_preset_on_the_search_path_labels_its_runs(compose_cfg, tmp_path: Path, overrides: list[str],
                                                     label: str) -> None:
    """The run folder Hydra makes (`${run_name:}` in hydra.run.dir) and the W&B name carry the label."""
    search = f"hydra.searchpath=[file://{_search_path(tmp_path)}]"
    cfg = compose_cfg([*overrides, search, "logger=none"], hydra=True)
    assert cfg.hydra.run.dir.endswith(f"_{label}_0.5_seed42"), cfg.hydra.run.dir
    assert name_of_config(cfg).wandb("tiny:llava").split("/")[1] == label


def test_the_search_path_of_the_hydra_at_hand_is_read(tmp_path: Path) -> None:
    """Inside a Hydra initialised on a folder (a copy of conf/ with the new preset), that folder's presets count."""
    from hydra import initialize_config_dir

    conf = _search_path(tmp_path)
    assert presets().by_name.get("owl_amia") is None  # not shipped
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        assert presets().by_name["owl_amia"].makeup == ("wanda", "owl", "amia")
        assert preset_name("wanda", "owl", "amia") == "owl_amia"
        assert presets().by_name["ria"].makeup == ("ria", "uniform", "all")
    assert preset_name("wanda", "owl", "amia") is None


def test_a_broken_preset_file_is_one_line_naming_it(tmp_path: Path) -> None:
    from hydra import initialize_config_dir

    conf = _search_path(tmp_path)
    (conf / "method" / "broken.yaml").write_text("defaults:\n  - nothere\n  - _self_\nname: broken\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"), pytest.raises(ValueError) as err:
        presets()
    assert str(err.value).startswith(f"{conf / 'method' / 'broken.yaml'}: defaults start from preset 'nothere'")
    assert "\n" not in str(err.value)


def test_every_shipped_preset_reads_as_hydra_composes_it() -> None:
    """Makeup, name and variant settings of each file of conf/method/ equal its composition."""
    from hydra import compose, initialize_config_dir

    from tamp.cli.schema import register_schema

    register_schema()
    files = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
    table = presets()
    assert sorted(p.stem for p in table.by_name.values()) == files
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # once for every preset: fast
        composed = {stem: OmegaConf.to_container(compose("run", [f"method={stem}", "logger=none"]).method,
                                                 resolve=True) for stem in files}
    for stem, method in composed.items():
        preset = table.by_name[method["name"] or method["pruner"]]
        assert preset.stem == stem
        assert preset.makeup == (method["pruner"], method["allocation"]["name"], method["tokens"]["name"]), stem
        variants = {f"{c}.variant": method[c]["variant"] for c in ("allocation", "tokens") if "variant" in method[c]}
        assert {k: v for k, v in own_variants(preset.name).items() if k in variants} == variants, stem
    # each makeup is named by its one preset that is not a variant of another (tamp_reference is tamp's)
    assert table.named[("wanda", "das", "amia")] == "tamp"
    assert table.named[("wanda", "ecoflap", "all")] == "ecoflap"
    assert table.named[("wanda", "uniform", "modality")] == "modality_vl"  # modality_l, _vl2_l start from it
    assert not {"tamp_reference", "ecoflap_official", "modality_l", "sparsegpt_official"} & set(table.named.values())
