"""Measure what the framework, the runtimes and each backbone cost on this machine.

    python scripts/benchmark.py                  # full run, ~15-20 min on 2 cores
    python scripts/benchmark.py --quick          # every section on tiny sizes, < 1 min
    python scripts/benchmark.py --backbones mobilenet_v2 efficientnet_lite0 --folds 3
    python scripts/benchmark.py --recipe none     # quality of fine-tuning instead of the probe

Writes <out>/report.md and <out>/report.json (working files under <out>/work). Run it on a quiet
machine: other processes on the same cores show up in every number.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("FITLENS_ROOT", str(ROOT))
BACKBONES = ("resnet18", "mobilenet_v2", "efficientnet_lite0")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected an integer >= 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny images, one fold, few repeats: a smoke test, not numbers")
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=None,
                        help="default: all three (--quick: mobilenet_v2)")
    parser.add_argument("--folds", type=_positive, default=None,
                        help="k of the group k-fold cross-validation (default 5)")
    parser.add_argument("--epochs", type=_positive, default=None,
                        help="training epochs per fold (default: the recipe's, --quick 1)")
    parser.add_argument("--recipe", default="linear_probe",
                        help="conf/experiment preset trained in each fold on top of cv5 "
                             "(default linear_probe; 'none' = cv5 alone: fine-tuning)")
    parser.add_argument("--threads", type=_positive, default=None,
                        help="torch and ONNX Runtime threads (default: all available cores)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmark")
    parser.add_argument("--data-root", type=Path, default=ROOT / "data" / "exercises",
                        help="<root>/<class>/*.jpg, as data.root")
    parser.add_argument("--other-dir", type=Path, default=ROOT / "data" / "other",
                        help="photos of exercises outside the classes")
    args = parser.parse_args(argv)
    if args.folds == 1:
        parser.error("--folds=1: cross-validation needs k >= 2")
    recipe = None if args.recipe == "none" else args.recipe
    presets = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    if recipe is not None and recipe not in presets:
        parser.error(f"--recipe {args.recipe}: no conf/experiment/{args.recipe}.yaml; "
                     f"expected one of {presets} or none")

    from rich.console import Console
    from rich.logging import RichHandler

    from fitlens.bench import report, suite

    console = Console(stderr=True)
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    # Progress of the benchmark itself; the libraries it drives only speak up about problems.
    logging.getLogger("fitlens").setLevel(logging.INFO)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    # Lightning's hints about workers and unmonitored checkpoints are about training jobs,
    # not about a benchmark that turns validation off on purpose.
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    settings = suite.make_settings(
        out=args.out, conf_dir=ROOT / "conf", data_root=args.data_root,
        other_dir=args.other_dir if args.other_dir.is_dir() else None, quick=args.quick,
        backbones=args.backbones, threads=args.threads, folds=args.folds, epochs=args.epochs,
        recipe=recipe)
    command = shlex.join(["python", "scripts/benchmark.py", *(sys.argv[1:] if argv is None
                                                              else argv)])
    results = suite.run(settings, command)
    json_path, md_path = report.write(results, args.out)
    for goal in report.goals(results):
        console.print(f"{goal.status:>12}  {goal.goal}: {goal.measured}", highlight=False)
    console.print(f"wrote {md_path} and {json_path}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
