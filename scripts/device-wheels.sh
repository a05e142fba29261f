#!/usr/bin/env bash
# Prepares, on a machine with package-index access, the wheels that scripts/device-check.sh installs on a lent GPU
# machine, where nothing can be fetched. That machine's image (Python 3.12, x86-64) holds torch, torchvision, numpy,
# scipy, scikit-learn, matplotlib, PyYAML, tqdm, safetensors and pytest, but not the packages below (about 6 MB;
# the device tool carries an ignored folder named in its `carry`). Usage, from the repository root:
#   bash scripts/device-wheels.sh            # writes .device-wheels/ (ignored by git)
set -euo pipefail
dest=${1:-.device-wheels}
mkdir -p "$dest"
target=(--only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --implementation cp -d "$dest")
# pure-Python packages, without their dependencies (torch, scipy, pandas, ... are in the image)
pip download -q --no-deps "${target[@]}" "torchattacks==3.5.1" "foolbox>=3.3.3,<3.4" eagerpy GitPython gitdb smmap \
    "mlxtend>=0.23"
# pydantic with its own small dependencies: pydantic-core's version must be the one pydantic pins
pip download -q "${target[@]}" "pydantic>=2.4,<3"
ls "$dest"
