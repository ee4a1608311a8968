"""Classify photos with the exported model, exactly as the app would.

    python scripts/predict.py photo.jpg more_photos/            # top-3 per image
    python scripts/predict.py --json photos/ > predictions.json
    python scripts/predict.py --variant int8 photo.jpg          # the quantised model

Unreadable files are reported and skipped. Exit status: 0 if at least one image was classified,
1 if none could be, 2 if the exported model cannot be loaded.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="image files and/or directories")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR,
                        help="folder with model_meta.json and the .onnx it names")
    parser.add_argument("--variant", default=None,
                        help="a variant listed in model_meta.json (e.g. int8) instead of fp32")
    parser.add_argument("--top-k", type=int, default=3, help="classes to list per image")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top-k={args.top_k}: expected an integer >= 1")

    from fitlens.export.metadata import MetadataError
    from fitlens.predict import Predictor, format_text, to_json

    try:
        predictor = Predictor(args.model_dir, args.variant)
    except MetadataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = predictor.predict_paths(args.paths, args.top_k)
    if args.json:
        print(json.dumps(to_json(result, predictor), indent=2))
    else:
        print(format_text(result))
    return 0 if result.predictions else 1


if __name__ == "__main__":
    sys.exit(main())
