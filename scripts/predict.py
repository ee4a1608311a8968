"""Classify photos with the exported model, exactly as the app would.

    python scripts/predict.py photo.jpg more_photos/            # top-3 per image, then a summary
    python scripts/predict.py data/other/ --save outputs/predict   # + predictions.csv, pictures
    python scripts/predict.py --json photos/ > predictions.json
    python scripts/predict.py --variant int8 photo.jpg          # the quantised model

Unreadable files are reported and skipped. Exit status: 0 if at least one image was classified,
1 if none could be, 2 if the exported model cannot be loaded (one error line; --verbose shows
the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("FITLENS_ROOT", str(ROOT))
MODEL_DIR = ROOT / "flutter_app" / "assets" / "models"


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parse.add_argument("paths", nargs="+", type=Path, help="image files and/or directories")
    parse.add_argument("--model-dir", type=Path, default=MODEL_DIR,
                       help="folder with model_meta.json and the .onnx it names")
    parse.add_argument("--variant", default=None,
                       help="a variant listed in model_meta.json (e.g. int8) instead of fp32")
    parse.add_argument("--top-k", type=int, default=3, help="classes to list per image")
    parse.add_argument("--json", action="store_true", help="print JSON for machines")
    parse.add_argument("--save", type=Path, default=None, metavar="DIR",
                       help="write DIR/predictions.csv and, per photo, DIR/<name>.jpg with the "
                            "answer (and a pose model's skeleton and person box) drawn on it")
    parse.add_argument("--verbose", action="store_true",
                       help="show the traceback of an error, not just its message")
    return parse


def main(argv: list[str] | None = None) -> int:
    parse = parser()
    args = parse.parse_args(argv)
    if args.top_k < 1:
        parse.error(f"--top-k={args.top_k}: expected an integer >= 1")

    from fitlens.cli import USER_ERROR, user_message
    from fitlens.predict import Predictor, format_summary, format_text, to_json, write_csv

    try:
        predictor = Predictor(args.model_dir, args.variant)
    except Exception as exc:
        message = user_message(exc)
        if message is None or args.verbose:
            raise
        print(f"error: {message}", file=sys.stderr)
        return USER_ERROR
    result = predictor.predict_paths(args.paths, args.top_k)
    if args.json:
        print(json.dumps(to_json(result, predictor), indent=2))
    else:
        print(format_text(result))
    if args.save is not None:
        from fitlens.pictures import save_pictures

        args.save.mkdir(parents=True, exist_ok=True)
        write_csv(result, args.save / "predictions.csv")
        save_pictures(result.predictions, predictor.spec.resize, args.save)
    # On stderr with --json, so the JSON on stdout stays parseable.
    print(format_summary(result) + (f"; saved to {args.save.resolve()}" if args.save else ""),
          file=sys.stderr if args.json else sys.stdout)
    return 0 if result.predictions else 1


if __name__ == "__main__":
    sys.exit(main())
