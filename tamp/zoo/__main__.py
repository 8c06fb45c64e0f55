"""`python -m tamp.zoo build|path|info|ship|lock [--recipe NAME] [--cache-dir DIR] [--force]`: the toy zoo's model.

build: make the recipe's data and trained model (or find them; the shipped model when its recipe
hash matches the code, unless --force) and print where they are; path: print the build directory
without building; info: print the build's record (build.json); ship: copy a trained build into the
package (tamp/zoo/shipped/<recipe>/) so fresh clones skip the training; lock: generate every named
recipe's data in memory and record its fingerprint (tamp/zoo/data_lock.json), after a generator edit
(a refactor that keeps the bytes keeps every recipe hash; it says which recipes' data changed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tamp.zoo.cache import DEFAULT_CACHE, build_dir, ensure_zoo
from tamp.zoo.recipe import RECIPES, get_recipe
from tamp.zoo.shipped import ship


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tamp.zoo", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "path", "info", "ship", "lock"))
    parser.add_argument("--recipe", default="default", choices=sorted(RECIPES))
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="cache root (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even when a build exists")
    args = parser.parse_args(argv)
    if args.command == "path":
        print(build_dir(args.recipe, args.cache_dir))
        return 0
    if args.command == "info":
        path = build_dir(args.recipe, args.cache_dir) / "build.json"
        if not path.is_file():
            print(f"tamp.zoo: no build at {path.parent}; run `python -m tamp.zoo build`", file=sys.stderr)
            return 1
        print(path.read_text(), end="")
        return 0
    if args.command == "lock":
        from tamp.zoo.datalock import LOCK, lock

        notes = {"same": "same data (same hash)", "new": "recorded",
                 "changed": "data CHANGED, so its hash did: a shipped model of it must be retrained and shipped"}
        for name, verdict in lock(RECIPES).items():
            print(f"  {name}: {notes[verdict]}")
        print(f"recorded in {LOCK}")
        return 0
    if args.command == "ship":
        try:
            dest = ship(build_dir(args.recipe, args.cache_dir), get_recipe(args.recipe))
        except (OSError, ValueError) as err:
            print(f"tamp.zoo: cannot ship: {err}", file=sys.stderr)
            return 1
        print(f"shipped to {dest}")
        return 0
    build = ensure_zoo(args.recipe, args.cache_dir, force=args.force)
    accuracy = build.info.get("test_answer_accuracy", {})
    print(f"zoo '{args.recipe}' model: {build.model_dir}")
    if build.info.get("source") == "shipped":
        origin = f"the shipped model (trained in {build.info.get('build_s', 0):.0f}s when it was shipped)"
    else:
        origin = f"trained here in {build.info.get('build_s', 0):.0f}s"
    print(f"  {origin}; test accuracy: {json.dumps(accuracy)}")
    tokens = build.info.get("calib_tokens")
    if tokens:
        print(f"  calibration samples: {tokens['tokens_mean']:.1f} tokens on average ({tokens['tokens_min']}-"
              f"{tokens['tokens_max']}), {tokens['image_share_mean']:.1%} image tokens (least {tokens['image_share_min']:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
