"""Regenerate the app's golden preprocessing fixtures in flutter_app/test/fixtures/.

    python scripts/make_fixtures.py                  # images, tensors, index, sample metadata
    python scripts/make_fixtures.py --tensors-only   # keep the images, recompute the rest

Rerun (and commit the result) only after a deliberate change to the preprocessing contract, and
change flutter_app/lib/src/preprocess.dart to match: the app's tests compare against these files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra import compose, initialize_config_dir

from fitlens.export.fixtures import FIXTURE_SIZE, write_fixtures

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "flutter_app" / "test" / "fixtures")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "exercises",
                        help="photo root (<class>/<file>.jpg) the JPEG fixtures are cut from")
    parser.add_argument("--size", type=int, default=FIXTURE_SIZE, help="model input size")
    parser.add_argument("--tensors-only", action="store_true",
                        help="reuse the images in --out; recompute tensors and metadata")
    args = parser.parse_args(argv)
    # The sample metadata carries the training classes, as a real export would.
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        classes = list(compose(config_name="train").data.classes)
    index = write_fixtures(args.out, classes, size=args.size,
                           data_root=None if args.tensors_only else args.data)
    for entry in index["fixtures"]:
        size_kb = (args.out / entry["file"]).stat().st_size / 1024
        tensors = ", ".join(t["file"] for t in entry["tensors"].values())
        print(f"{entry['file']:<20} {size_kb:5.1f} KB  -> {tensors}")


if __name__ == "__main__":
    main()
