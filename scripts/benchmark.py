"""Measure what the framework, the runtimes and each model cost on this machine.

    python scripts/benchmark.py                  # full run, ~45 min on 2 quiet cores
    python scripts/benchmark.py --quick          # every section on tiny sizes, ~2 min
    python scripts/benchmark.py --backbones mobilenet_v2 efficientnet_lite0 --folds 3
    python scripts/benchmark.py --backbones --pose-backbones mobilenet_v2   # one pose row only
    python scripts/benchmark.py --recipe none     # CNN rows fine-tuned instead of the probe
    python scripts/benchmark.py --pose-int8-folds 5   # int8 of every fold of the pose rows too

Rows: a CNN per --backbones (model=<backbone>, trained with --recipe) and a pose model per
--pose-backbones (experiment=pose, model/backbone=<backbone>), each through the project's
cross-validation job on the same group folds.

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
POSE_BACKBONES = ("efficientnet_lite0", "mobilenet_v2")
#: int8 of a pose row on its first 2 folds by default: exporting and quantising the 384 px pose
#: graph costs about a minute a fold on 2 cores, and the full run must stay near 45 minutes.
POSE_INT8_FOLDS = 2


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected an integer >= 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny images, 2 folds, few repeats: a smoke test, not numbers")
    parser.add_argument("--backbones", nargs="*", choices=BACKBONES, default=None,
                        help="CNN rows (default: all three; --quick: mobilenet_v2; none "
                             "given: no CNN row)")
    parser.add_argument("--pose-backbones", nargs="*", choices=BACKBONES, default=None,
                        help="pose rows, experiment=pose with model/backbone=<name> (default: "
                             f"{' '.join(POSE_BACKBONES)}; --quick: mobilenet_v2, random "
                             "init; none given: no pose row)")
    parser.add_argument("--folds", type=_positive, default=None,
                        help="k of the group k-fold cross-validation (default 5, --quick 2)")
    parser.add_argument("--epochs", type=_positive, default=None,
                        help="training epochs per fold (default: the recipe's, --quick 1)")
    parser.add_argument("--recipe", default="linear_probe",
                        help="conf/experiment preset the CNN rows train with on top of cv5 "
                             "(default linear_probe; 'none' = cv5 alone: fine-tuning)")
    parser.add_argument("--pose-int8-folds", type=_positive, default=POSE_INT8_FOLDS,
                        help="folds of each pose row exported and quantised for the int8 "
                             f"section (default {POSE_INT8_FOLDS}: the pose graph's export "
                             "costs about a minute a fold; CNN rows: every fold)")
    parser.add_argument("--threads", type=_positive, default=None,
                        help="torch and ONNX Runtime threads (default: all available cores)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmark")
    parser.add_argument("--data-root", type=Path, default=ROOT / "data" / "exercises",
                        help="<root>/<class>/*.jpg, as data.root")
    parser.add_argument("--other-dir", type=Path, default=ROOT / "data" / "other",
                        help="photos of exercises outside the classes: the reject class's "
                             "photos, as data.reject_root (missing folder: no reject class)")
    args = parser.parse_args(argv)
    if args.folds == 1:
        parser.error("--folds=1: cross-validation needs k >= 2")
    recipe = None if args.recipe == "none" else args.recipe
    presets = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    if recipe is not None and recipe not in presets:
        parser.error(f"--recipe {args.recipe}: no conf/experiment/{args.recipe}.yaml; "
                     f"expected one of {presets} or none")
    if recipe in ("cv5", "pose"):
        parser.error(f"--recipe {recipe}: every row already runs cv5, and pose rows come from "
                     "--pose-backbones; expected a CNN training preset such as linear_probe")

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
        backbones=args.backbones, pose_backbones=args.pose_backbones, threads=args.threads,
        folds=args.folds, epochs=args.epochs, recipe=recipe,
        pose_int8_folds=args.pose_int8_folds)
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
