#!/usr/bin/env bash
# Build the wheel bundle for an offline GPU machine that already has torch, transformers, peft and accelerate
# (Python 3.12, x86-64 Linux) but lacks the rest of peftbench's dependencies. Usage: build_gpu_bundle.sh DIR
# Prints what is in DIR and its total size (kept under 60 MB: no lm-eval, no gguf; evaluation is skipped there).
#
# ENGINES=1 builds the engines bundle (issue 9) instead: the same plus unsloth + unsloth_zoo + cut_cross_entropy, with
# the versions unsloth 2026.10.9 pins (trl 1.15.0, datasets 4.x), so every engine of one sweep runs on one stack.
# Two wheels are repacked to fit the device call's 64 MiB beside the repo: bitsandbytes (both bundles) keeps only the
# CUDA build torch uses there (BNB_CUDA, default 130 = torch 2.11.0+cu130; its other CUDA/ROCm/XPU builds are ~40 MB),
# and unsloth (engines bundle) loses its `studio/` web app and `unsloth_cli/` (26 MB; training never imports them).
set -euo pipefail
dest=${1:?usage: build_gpu_bundle.sh DIR}
mkdir -p "$dest"
py=${PYTHON:-python3}
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# Exact pins: what peftbench is tested with; --no-deps so nothing the GPU machine already has gets replaced.
if [[ ${ENGINES:-0} == 1 ]]; then
  wheels=(trl==1.15.0 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19 hydra-core==1.3.8 omegaconf==2.3.1
          bitsandbytes==0.50.2 liger-kernel==0.8.5 unsloth==2026.10.9 unsloth_zoo==2026.10.9 cut_cross_entropy==25.1.1
          ${EXTRA_WHEELS:-})
else
  wheels=(trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 hydra-core==1.3.8 omegaconf==2.3.1
          bitsandbytes==0.50.2 liger-kernel==0.8.5 ${EXTRA_WHEELS:-})
fi
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d "$dest" "${wheels[@]}"
# antlr4-python3-runtime 4.9.3 (omegaconf's pin) is published as a source archive only: build its pure-Python wheel.
"$py" -m pip wheel -q --no-deps -w "$dest" antlr4-python3-runtime==4.9.3
# Drop files from a wheel and their RECORD lines (zipfile: a wheel is a zip; pip installs what RECORD lists).
"$py" - "$dest" "${BNB_CUDA:-130}" <<'EOF'
import re, sys, zipfile
from pathlib import Path
dest, cuda = Path(sys.argv[1]), sys.argv[2]
rules = {
    "bitsandbytes-": lambda n: re.search(r"libbitsandbytes_(?!cpu\.|cuda%s\.)" % cuda, n) is not None,
    "unsloth-2": lambda n: n.startswith(("studio/", "unsloth_cli/")),
}
for wheel in sorted(dest.glob("*.whl")):
    drop = next((rule for prefix, rule in rules.items() if wheel.name.startswith(prefix)), None)
    if drop is None:
        continue
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        for item in src.infolist():
            if drop(item.filename):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(l for l in lines if not drop(l.split(",", 1)[0])).encode()
            out.writestr(item, data)
    before = wheel.stat().st_size
    tmp.replace(wheel)
    print(f"repacked {wheel.name}: {before / 1e6:.1f} MB -> {wheel.stat().st_size / 1e6:.1f} MB")
EOF
ls -l "$dest"
du -sh "$dest"
