"""The wheels a GPU node of the `device` tool lacks for gpu_node_check, fetched here where PyPI is reachable.

The device machines run their own image (Python 3.12, torch 2.11, transformers 5.17, no Hydra, no
lmms-eval, nothing fetchable) and take at most 64 MiB of working tree and carried files per call. This
picks, from requirements.lock, every package that image lacks plus the ones whose image version differs
where tamp depends on the version (transformers 5.23: 5.17 cannot load Qwen2.5-Omni's thinker), leaves
out what the check does not import (docs and lint tools, W&B with `logger=none`, the video decoders
of video tasks) and what must come from the image (torch, its CUDA libraries, numpy, pyarrow), and
downloads cp312 manylinux wheels into `.whl/` (pure-Python packages published only as source are built
here into wheels). It stops if they would not fit.

`--check` proves the set is enough without a GPU: it builds a virtual environment linking this one's
packages but those neither in the image nor carried (an import of one fails as it would there, in
every process the check starts) and runs gpu_node_check's sections on the CPU with it.

    python benchmarks/device_wheels.py                  # writes .whl/ (git-ignored), prints the size
    python benchmarks/device_wheels.py --check          # gpu_node_check --device cpu with the rest hidden

On the device, one `run` with carry [".whl"] (and timeout_s about 420: the check's --budget-s is 330):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 python3 benchmarks/gpu_node_check.py \
        --device cuda --out /tmp/gnc; cp /tmp/gnc/*.json $OUT/

(the JSON files are what comes back: at most 8 files; the run folders stay there). A second run with
`--only` and the sections the first one reported as SKIP, if device time is left.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
WHEELS = REPO / ".whl"
#: the device image's packages (the tool library's KINDS.md, read on a machine on 2026-11-17)
IMAGE = (
    "absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build "
    "certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core "
    "cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock "
    "flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx "
    "huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt "
    "jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities "
    "linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes "
    "mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba "
    "numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime "
    "nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse "
    "nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx "
    "onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix "
    "orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client "
    "propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions "
    "pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil "
    "pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image "
    "scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six "
    "sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl "
    "tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics "
    "torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop "
    "wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"
).split()
#: the image has these, but tamp needs the lock's version (and its tokenizer / hub; transformers checks
#: regex >= 2025.10.22 when imported, and the image's version is not on record)
MATCH_LOCK = ("transformers", "tokenizers", "huggingface-hub", "regex")
#: never carried: the lock's development tools, and what gpu_node_check does not import (no W&B with
#: logger=none, no video decoding for an image task, Windows-only shims, lmms-eval's YouTube fetcher,
#: the COCO caption scorer with its 100 MB of Java)
LEAVE_OUT = (
    "mkdocs mkdocs-autorefs mkdocs-get-deps mkdocs-material mkdocs-material-extensions mkdocstrings "
    "mkdocstrings-python griffelib ghp-import paginate babel backrefs mergedeep pymdown-extensions "
    "pyyaml-env-tag watchdog ruff uv pre-commit virtualenv nodeenv identify cfgv distlib python-discovery "
    "wandb sentry-sdk gitpython gitdb smmap av decord torchcodec yt-dlp win32-setctime hf-transfer "
    "nvidia-cuda-cccl pycocoevalcap"
).split()
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
BUDGET_MIB = 46.0  # 64 MiB a call, less the working tree (about 15 MiB) and a margin


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    """name -> version of the lock's entries for Python >= 3.12 (entries with a marker for < 3.12 dropped)."""
    out: dict[str, str] = {}
    for match in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)(?: ; ([^\\\n]+))?", LOCK.read_text(), re.M):
        name, version, marker = match.groups()
        if marker and "< '3.12'" in marker:
            continue
        out[canonical(name)] = version
    return out


def chosen() -> dict[str, str]:
    """The packages to carry: missing from the image or matched to the lock, minus those left out."""
    image, leave = {canonical(p) for p in IMAGE}, {canonical(p) for p in LEAVE_OUT}
    return {name: version for name, version in sorted(locked().items())
            if name not in leave and (name not in image or name in MATCH_LOCK)}


MANIFEST = "device_wheels.txt"  # the wheels this script wrote into its folder: the only ones it replaces


def prepare_folder(out: Path) -> None:
    """The folder for the wheels: made here, or one this script filled before (its manifest names every
    wheel in it); those wheels are removed (a second version of a package stops the install there).
    Anything else is refused: a user's own wheels are never deleted, and never through a link."""
    if out.is_symlink():
        raise SystemExit(f"device_wheels: {out} is a symbolic link; give a real folder (--out)")
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    ours = set(manifest.read_text().split()) if manifest.is_file() else set()
    theirs = sorted(w.name for w in out.glob("*.whl") if w.name not in ours)
    if theirs:
        raise SystemExit(f"device_wheels: {out} holds wheels this script did not write ({', '.join(theirs[:3])}"
                         f"{', ...' if len(theirs) > 3 else ''}); give an empty folder (--out)")
    for name in ours:
        wheel = out / name
        if wheel.is_file() and not wheel.is_symlink():
            wheel.unlink()
    manifest.unlink(missing_ok=True)


def download(packages: dict[str, str], out: Path) -> None:
    """cp312 manylinux wheels (pure-Python ones for any platform); a package published only as source is
    built into a wheel here (pure Python: it installs the same there). The manifest lists what it wrote."""
    prepare_folder(out)
    before = {w.name for w in out.glob("*.whl")}
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]

    def record() -> None:  # after every package: a run stopped half-way leaves its wheels named as its own
        (out / MANIFEST).write_text("\n".join(sorted({w.name for w in out.glob("*.whl")} - before)) + "\n")

    for name, version in packages.items():
        record()
        spec = f"{name}=={version}"
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", *platforms, "-d", str(out), spec]
        if subprocess.run(cmd, capture_output=True, text=True).returncode == 0:
            continue
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), spec],
                               capture_output=True, text=True)
        if built.returncode != 0:
            raise SystemExit(f"device_wheels: no cp312 wheel and no build for {spec}: {built.stderr[-400:]}")
        pure = [w for w in out.glob(f"{canonical(name).replace('-', '_')}-*.whl") if "none-any" in w.name]
        if not pure:
            raise SystemExit(f"device_wheels: {spec} built into a platform wheel here; it would not install there")
    record()


def hidden_entries(carried: dict[str, str]) -> tuple[set[str], list[str]]:
    """site-packages entries (top-level modules, .dist-info folders) of this environment's distributions that
    the device would not have, and those distributions' names."""
    from importlib.metadata import distributions

    have = {canonical(p) for p in IMAGE} | set(carried)
    entries: set[str] = set()
    names: list[str] = []
    for dist in distributions():
        name = canonical(dist.metadata["Name"] or "")
        if name in have or name == "tamp":
            continue
        names.append(name)
        entries |= {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
    return entries, sorted(set(names))


def device_like_venv(carried: dict[str, str], root: Path) -> Path:
    """A virtual environment whose site-packages links every entry of this one's but the hidden ones: an
    import of a package the device lacks fails there as it would on the device, in every subprocess too
    (they run this interpreter)."""
    import site
    import venv

    hidden, names = hidden_entries(carried)
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    target = next(root.glob("lib/python3*/site-packages"))
    source = Path(next(p for p in site.getsitepackages() if Path(p).name == "site-packages"))
    for entry in source.iterdir():
        if entry.name not in hidden and not (target / entry.name).exists():
            (target / entry.name).symlink_to(entry)
    print(f"hidden: {len(names)} distributions ({', '.join(names)})", flush=True)
    return root / "bin" / "python"


def check(carried: dict[str, str], sections: str) -> int:
    """gpu_node_check --device cpu in an environment without the packages the device would lack."""
    with tempfile.TemporaryDirectory() as tmp:
        python = device_like_venv(carried, Path(tmp) / "venv")
        cmd = [str(python), str(REPO / "benchmarks" / "gpu_node_check.py"), "--device", "cpu", "--only", sections,
               "--out", str(Path(tmp) / "out")]
        return subprocess.run(cmd, cwd=REPO).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(WHEELS), help="folder for the wheels (default .whl/, git-ignored)")
    parser.add_argument("--budget-mib", type=float, default=BUDGET_MIB)
    parser.add_argument("--check", action="store_true", help="run gpu_node_check on the CPU with the rest hidden")
    parser.add_argument("--sections", default="scale,sparse24,study,cuda_tests,precision,placement,offload")
    parser.add_argument("--list", action="store_true", help="print the chosen packages and stop")
    args = parser.parse_args()
    packages = chosen()
    if args.list:
        print("\n".join(f"{n}=={v}" for n, v in packages.items()))
        return 0
    if args.check:
        return check(packages, args.sections)
    out = Path(args.out)
    download(packages, out)
    sizes = sorted(((w.stat().st_size, w.name) for w in out.glob("*.whl")), reverse=True)
    total = sum(s for s, _ in sizes) / 2**20
    print(f"{len(sizes)} wheels, {total:.1f} MiB in {out} (budget {args.budget_mib:g} MiB); largest: "
          + ", ".join(f"{n} {s / 2**20:.1f}" for s, n in sizes[:5]))
    if total > args.budget_mib:
        print(f"device_wheels: {total:.1f} MiB is over the budget of {args.budget_mib:g} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
