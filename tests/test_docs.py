"""The documentation site: it builds strictly, its paper tables are the paper's, its walk-throughs run.

- `mkdocs build --strict` (a broken link or anchor, a missing image, a page left out of the nav fails),
  without importing tamp or torch: the API reference is read from the sources by griffe.
- Every "Reproducing the paper" page prints its table exactly as tests/data/paper_tables.json holds it.
- "Extending tamp": the files each walk-through names are written into a temporary folder that the
  registries' package walk (`__path__`) and Hydra's search path see, as if they were in the checkout,
  and its commands and scripts run against them.
- "Python API": the example runs as printed.

The command blocks of the pages are run or composed by tests/test_readme_commands.py, as the README's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
       "NO_MKDOCS_2_WARNING": "1"}
PAPER = json.loads((REPO / "tests" / "data" / "paper_tables.json").read_text())["tables"]
#: the page of each table of paper_tables.json
PAPER_PAGES = {"table1": "table1.md", "table2": "table2.md", "table3": "table3.md", "table4": "table4.md",
               "table5": "table5.md"}
#: a walk-through file's path -> where Hydra's search path finds it (the group `experiment` is experiments/)
SEARCHPATH_GROUP = {"conf": "", "experiments": "experiment"}


def code_blocks(page: str) -> list[tuple[str, str | None, str]]:
    """(language, title or None, code) of each fenced block of docs/PAGE, in order."""
    text = (DOCS / page).read_text()
    return re.findall(r'```(\w+)(?: title="([^"]+)")?\n(.*?)```', text, flags=re.S)


# ------------------------------------------------------------------------------------------------ the build
def test_mkdocs_build_is_strict_and_imports_neither_tamp_nor_torch(tmp_path: Path) -> None:
    """The whole site, as `make docs-build` builds it; about 8 s on a busy 2-core box."""
    script = textwrap.dedent(f"""
        import sys
        from mkdocs.commands.build import build
        from mkdocs.config import load_config
        build(load_config(config_file={str(REPO / "mkdocs.yml")!r}, site_dir={str(tmp_path / "site")!r}, strict=True))
        heavy = sorted(m for m in ("torch", "transformers", "lmms_eval", "tamp") if m in sys.modules)
        print("imported:", heavy)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported: []" in proc.stdout, proc.stdout
    site = tmp_path / "site"
    assert (site / "index.html").is_file() and (site / "img" / "toy_sparsity_vs_rel.png").is_file()
    api = (site / "api.html").read_text()
    for name in ("tamp.api.functions.prune", "tamp.pruning.masks.nm_mask", "tamp.tokens.amia.select_tokens"):
        assert f'id="{name}"' in api, f"the API reference lacks {name}"


def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    """The check above is not vacuous: one link to a missing anchor in a copy of the docs fails it."""
    import shutil

    shutil.copytree(DOCS, tmp_path / "docs")
    page = tmp_path / "docs" / "guarantees.md"
    page.write_text(page.read_text() + "\nSee [nothing](runs.md#no-such-section).\n")
    config = (REPO / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {tmp_path / 'docs'}")
    config = re.sub(r"paths: \[\.\]", f"paths: [{REPO}]", config)
    (tmp_path / "mkdocs.yml").write_text(config)
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(tmp_path / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "no-such-section" in proc.stderr, proc.stderr[-2000:]


# ------------------------------------------------------------------------------------- the paper's numbers
def _cell(value: float | int, underlined: bool = False) -> str:
    text = str(value) if isinstance(value, int) else f"{value:.1f}"
    return f"<u>{text}</u>" if underlined else text


def paper_table_markdown(key: str) -> str:
    """The table of paper_tables.json as its page prints it (underlined: the paper's second best)."""
    table = PAPER[key]
    if key == "table4":
        lines = ["| part | row (paper) | preset | LLaVA-NeXT at 50% | audio-visual at 60% | per-benchmark scores printed |",
                 "|---|---|---|---:|---:|---|"]
        for r in table["rows"]:
            printed = "no" if r.get("scores_printed") is False else "yes (Tables 2, 3)"
            lines.append(f"| ({r['part']}) | {r['paper']} | `{r['method']}` | {_cell(r['llava_next'])} | "
                         f"{_cell(r['audio_visual'])} | {printed} |")
        return "\n".join(lines)
    has_rel = any("rel" in r for r in table["rows"])
    head = ["row (paper)", "preset", *table["columns"], *(["Rel.%"] if has_rel else [])]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in table["rows"]:
        marks = set(r.get("underlined", []))
        cells = [_cell(v, c in marks) for v, c in zip(r["scores"], table["columns"], strict=True)]
        if has_rel:
            cells.append(_cell(r["rel"], "Rel" in marks))
        lines.append("| " + " | ".join([r["paper"], f"`{r['method']}`", *cells]) + " |")
    return "\n".join(lines)


@pytest.mark.parametrize("key", sorted(PAPER_PAGES))
def test_each_paper_page_prints_the_papers_numbers(key: str) -> None:
    page = (DOCS / "paper" / PAPER_PAGES[key]).read_text()
    assert paper_table_markdown(key) in page, f"docs/paper/{PAPER_PAGES[key]}: its table differs from paper_tables.json"
    experiment = PAPER[key].get("experiment")
    if experiment:
        assert f"+experiment={experiment}" in page


def test_every_study_has_a_page() -> None:
    pages = "".join(p.read_text() for p in (DOCS / "paper").glob("*.md"))
    studies = sorted({m for m in re.findall(r"\+experiment=(\w+)", pages)})
    from tamp.core.paths import EXPERIMENTS_DIR

    shipped = {p.stem for p in EXPERIMENTS_DIR.glob("*.yaml")}
    paper_studies = {s for s in shipped if not s.startswith("toy_")}
    assert paper_studies and paper_studies <= set(studies), f"studies without a page: {paper_studies - set(studies)}"


# ----------------------------------------------------------------------------------------- the walk-throughs
def _lay_out(page: str, root: Path) -> list[tuple[str, str]]:
    """Write the page's titled blocks under root (tamp/... as code, conf/... and experiments/... as a Hydra
    search path); return its untitled (language, code) blocks in order."""
    rest = []
    for language, title, code in code_blocks(page):
        if not title:
            rest.append((language, code))
            continue
        top, _, inner = title.partition("/")
        if top == "tamp":
            target = root / "code" / title
        else:
            target = root / "conf" / SEARCHPATH_GROUP[top] / inner
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    return rest


def _preamble(root: Path) -> str:
    """Extend each tamp package's __path__ with the walk-through's folder of the same name."""
    return textwrap.dedent(f"""
        import importlib, pathlib
        for folder in sorted(pathlib.Path({str(root / "code" / "tamp")!r}).iterdir()):
            importlib.import_module(f"tamp.{{folder.name}}").__path__.append(str(folder))
    """)


def _run(script: str, tmp_path: Path, timeout: int = 600) -> str:
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _commands(blocks: list[tuple[str, str]]) -> list[list[str]]:
    prefix = ".venv/bin/python -m tamp.run "
    lines = [line.split("  #")[0].strip() for lang, code in blocks if lang == "bash" for line in code.splitlines()]
    assert all(line.startswith(prefix) for line in lines if line), lines
    return [line[len(prefix):].split() for line in lines if line]


def test_new_pruner_walkthrough(tmp_path: Path) -> None:
    """Its two files make `method=absmean` a method: both commands compose and check (every cell), and the
    pruner prunes a tiny model to its target with masks of its own (not Wanda's)."""
    rest = _lay_out("extending.md", tmp_path)
    commands = _commands(rest[:1])
    assert commands == [["method=absmean", "sparsity.target=0.5"], ["-m", "method=wanda,absmean", "sparsity.target=0.5,0.6"]]
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    script = _preamble(tmp_path) + textwrap.dedent(f"""
        import torch
        import tamp
        from tamp.cli.preflight import check_command
        from tiny_models import fresh_tiny, tiny_sample

        print("cells", [check_command([*c, {search!r}]) for c in {commands!r}])
        masks = {{}}
        for method in ("absmean", "wanda"):
            bundle = fresh_tiny("llava_next")
            summary = tamp.prune(bundle.model, [tiny_sample("llava_next", 0)], {{"method": {{"pruner": method}}}},
                                 sparsity=0.5, progress=False, keep_masks=True)
            masks[method] = summary.masks
            print(method, summary.summary().splitlines()[1])
        same = all(torch.equal(masks["absmean"][k], masks["wanda"][k]) for k in masks["wanda"])
        print("same masks as wanda:", same)
    """)
    out = _run(f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r})\n" + script, tmp_path)
    assert "cells [1, 4]" in out, out
    assert re.search(r"absmean overall sparsity planned 0\.5\d*, achieved 0\.5", out), out
    assert "same masks as wanda: False" in out, out


@pytest.mark.slow
def test_new_pruner_walkthrough_runs_through_the_cli(tmp_path: Path) -> None:
    """The page's first command as a real run (load, calibrate, prune, score, results.json): ~40 s."""
    rest = _lay_out("extending.md", tmp_path)
    args = [*_commands(rest[:1])[0], f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"paths.output_dir={tmp_path / 'out'}"]
    script = _preamble(tmp_path) + f"import sys\nfrom tamp.cli.run_command import cli\nsys.argv = ['tamp.run', *{args!r}]\ncli()\n"
    out = _run(script, tmp_path)
    assert "absmean, seed 42: sparsity 0.5000 (target 0.5)" in out, out
    (record,) = (tmp_path / "out").rglob("results.json")
    assert json.loads(record.read_text())["status"] == "completed"


def test_new_family_walkthrough(tmp_path: Path) -> None:
    """The adapter file registers the family; the page's script finds it by model_type and prunes with it."""
    rest = _lay_out("extending.md", tmp_path)
    (script,) = [code for lang, code in rest if lang == "python"]
    out = _run(_preamble(tmp_path) + script, tmp_path)
    lines = out.strip().splitlines()
    assert lines[0] == "Qwen3Adapter 2 blocks", out
    assert lines[1].startswith("overall sparsity planned 0.5"), out


def test_new_suite_walkthrough(tmp_path: Path) -> None:
    """The eval preset and the study compose: 3 cells, each with the suite's tasks and columns, checked as
    for a GPU node (the weights are not here)."""
    rest = _lay_out("extending.md", tmp_path)
    (command,) = _commands([b for b in rest if b[0] == "bash"][1:])
    assert command == ["-m", "+experiment=my_study"]
    from tamp.cli.preflight import check_command  # in this process: nothing of tamp's code is added

    assert check_command([*command, f"hydra.searchpath=[file://{tmp_path / 'conf'}]"], local=False) == 3


# ------------------------------------------------------------------------------------------------ the API page
def test_api_page_example_runs(tmp_path: Path) -> None:
    """The "Python API" example as printed, its output folder moved to a temporary one."""
    (example,) = [code for lang, _, code in code_blocks("api.md") if lang == "python"]
    assert 'tamp.prune(model, samples, "tamp", sparsity=0.5' in example
    out = _run(example.replace("outputs/api_example", str(tmp_path / "api_example")), tmp_path)
    lines = out.strip().splitlines()
    assert lines[0].startswith("overall sparsity planned 0.50") and lines[1].endswith(": 28 masks"), out
    saved = tmp_path / "api_example" / "tamp_50"
    assert {"config.json", "sparsity_manifest.json", "masks.safetensors"} <= {p.name for p in saved.iterdir()}
