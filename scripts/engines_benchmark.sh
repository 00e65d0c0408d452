#!/usr/bin/env bash
# Engines benchmark (issue 9) on one GPU machine with torch/transformers/peft/accelerate and nothing else: install the
# engines bundle (ENGINES=1 scripts/build_gpu_bundle.sh), then run the named sections on the Llama-2-7B architecture
# (random init), fixed 2048-token sequences, micro-batch 2, bf16 (+recipe=family_7b_synthetic), writing raw logs
# (OUTDIR/logs/*.log), peftbench's records and table (OUTDIR/results/engines/), unsloth-direct rows
# (OUTDIR/direct.csv), every command (OUTDIR/commands.txt) and the side-by-side table (OUTDIR/summary.md).
#
#   scripts/engines_benchmark.sh OUTDIR [SECTION...]      (default: env all fast direct: ~500 s on a fresh H100 machine, call 4)
# Sections: env all peft_liger fast unsloth direct fast_gc fast_offload
#   all         python -m peftbench -m method=$METHODS engine=peft,liger,unsloth  (the whole table as one sweep)
#   peft_liger  the same for engine=peft,liger only
#   fast        the same with profile=fast for $FAST_METHODS (engine=peft)
#   fast_gc     profile=fast as it was measured there (Liger, no compile) with every layer checkpointed
#               (profile.compile=off profile.checkpointing=all)
#   fast_offload  the same, checkpointed layers' inputs offloaded to pinned host memory (profile.checkpointing=all_offload)
#   unsloth     the same sweep with engine=unsloth for $UNSLOTH_METHODS (writes the random-init checkpoint once,
#               under PEFTBENCH_CACHE, default /tmp/peftbench-cache: 13 GB for 7B, not under OUTDIR)
#   direct      scripts/unsloth_direct.py (no peftbench code) for $UNSLOTH_METHODS, same checkpoint, shapes, steps
# Environment: BUNDLE (default .bundle/whl), STEPS (optimizer steps per point, default 10; the first 3 are warm-up),
# METHODS (default "lora qlora full"), FAST_METHODS ("lora qlora"), UNSLOTH_METHODS (default $METHODS).
set -uo pipefail
out=$(realpath -m "${1:?usage: engines_benchmark.sh OUTDIR [SECTION...]}"); shift
sections=${*:-env all fast direct}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
mkdir -p "$out/logs" "$out/results"
bundle=${BUNDLE:-.bundle/whl}
steps=${STEPS:-10}
methods=${METHODS:-lora qlora full}
fast_methods=${FAST_METHODS:-lora qlora}
unsloth_methods=${UNSLOTH_METHODS:-$methods}
site=/tmp/peftbench-site
[[ -d $site ]] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "$bundle"/*.whl > "$out/logs/install.log" 2>&1 || { cat "$out/logs/install.log"; exit 1; }
export PYTHONPATH="$repo:$site" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HYDRA_FULL_ERROR=1
export HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 PEFTBENCH_CACHE=${PEFTBENCH_CACHE:-/tmp/peftbench-cache}

source "$repo/scripts/bench_lib.sh"
pb=(python3 -m peftbench -m +recipe=family_7b_synthetic run.name=engines "run.results_dir=$out/results/engines"
    train.max_steps="$steps" "hydra.sweep.dir=$out/hydra/\${now:%H-%M-%S}")
csv() { echo "$*" | tr ' ' ','; }

for section in $sections; do
  case $section in
    env)
      { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
        python3 -c 'import torch,transformers,peft,trl,bitsandbytes,datasets,accelerate,liger_kernel,importlib.metadata as m;
print({d: m.version(d) for d in ("torch","transformers","peft","trl","bitsandbytes","datasets","accelerate","liger-kernel")}, "cuda", torch.version.cuda)'
        python3 -c 'import importlib.metadata as m; print({d: m.version(d) for d in ("unsloth","unsloth_zoo","cut_cross_entropy")})'
        ls "$bundle"; nproc; free -g | head -2; df -h /tmp | tail -1; } > "$out/logs/env.log" 2>&1
      cat "$out/logs/env.log" ;;
    all)
      run all "${pb[@]}" method="$(csv $methods)" engine=peft,liger,unsloth ;;
    fast_gc)
      run fast_gc "${pb[@]}" method="$(csv $fast_methods)" engine=peft profile=fast profile.compile=off profile.checkpointing=all ;;
    fast_offload)
      run fast_offload "${pb[@]}" method="$(csv $fast_methods)" engine=peft profile=fast profile.compile=off \
          profile.checkpointing=all_offload ;;
    peft_liger)
      run peft_liger "${pb[@]}" method="$(csv $methods)" engine=peft,liger ;;
    fast)
      run fast "${pb[@]}" method="$(csv $fast_methods)" engine=peft profile=fast ;;
    unsloth)
      run unsloth "${pb[@]}" method="$(csv $unsloth_methods)" engine=unsloth ;;
    direct)
      ckpt=$(python3 -m peftbench.worker checkpoint +recipe=family_7b_synthetic 2>> "$out/logs/direct.log" | tail -1)
      echo "checkpoint: $ckpt" | tee -a "$out/logs/direct.log"
      for m in $unsloth_methods; do
        run direct python3 scripts/unsloth_direct.py --method "$m" --model "$ckpt" --steps "$steps" --warmup 3 \
            --out "$out/direct.csv"
      done ;;
    *) echo "unknown section $section"; exit 2 ;;
  esac
done
python3 scripts/engines_tables.py "$out" > "$out/summary.md" 2>> "$out/logs/tables.log"; cat "$out/summary.md"
