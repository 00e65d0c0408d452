#!/usr/bin/env bash
# Run the GPU benchmark end to end on a machine with torch/transformers/peft/accelerate but nothing else:
# install the wheel bundle (scripts/build_gpu_bundle.sh) into a temporary site dir, then run the named sections,
# writing raw logs (OUTDIR/logs/*.log), peftbench's results (OUTDIR/results/<run>/table.csv + records) and the stock
# baseline's tables (OUTDIR/stock_*.csv) into OUTDIR. Every command is echoed into OUTDIR/commands.txt.
#
#   scripts/gpu_benchmark.sh OUTDIR [SECTION...]      (default: all sections, in order)
# Sections: env a_stock a_default a_each ab profile memory_trace a_fast compile qlora7b_mb1 qlora70b overhead measure
# b_stock b_default
# Environment: BUNDLE (wheel folder, default .gpu/whl), PEFTBENCH_DATA (folder holding gsm8k/train.jsonl),
# TOKENIZER (tokenizer folder for workload B), STEPS (optimizer steps per point, default 12), METHODS, B_METHODS,
# FAST_METHODS and EACH_METHODS (default METHODS), EACH_TIMEOUT (seconds per a_each process), PROFILE_METHODS
# (default lora; METHOD:PROFILE picks peftbench's profile), OVERHEAD_STEPS (default STEPS), OVERHEAD_REPEATS (trainings per arm, default 3), OVERHEAD_ARMS
# (default none,peftbench; see stock_baseline.py --arms),
# AB_METHODS (default lora), AB_PROFILES (default "default fast"; a side may be LABEL=PROFILE,OVERRIDE,...),
# AB_ROUNDS (default 2), MEMTRACE_METHODS (default dora), MEASURE_METHODS (default lora),
# COMPILE_POINTS (the `compile` section's points, METHOD:PLAN[:OVERRIDE,...], default: LoRA off every_2 every_4 all
# all_offload, QLoRA off all all_offload), COMPILE_PROFILE (default fast), BENCH_PYTHONPATH (put before the repo on
# PYTHONPATH, e.g. scripts/host_monitor for its sitecustomize).
set -uo pipefail
out=$(realpath -m "${1:?usage: gpu_benchmark.sh OUTDIR [SECTION...]}"); shift
sections=${*:-env a_stock a_default a_fast qlora7b_mb1 qlora70b overhead b_stock b_default}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
mkdir -p "$out/logs" "$out/results"
bundle=${BUNDLE:-.gpu/whl}
steps=${STEPS:-12}
methods=${METHODS:-lora qlora dora ia3 prompt_tuning bitfit full}
b_methods=${B_METHODS:-lora qlora}
site=$(mktemp -d /tmp/peftbench-site.XXXX)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$bundle"/*.whl \
    > "$out/logs/install.log" 2>&1 || { cat "$out/logs/install.log"; exit 1; }
export PYTHONPATH="${BENCH_PYTHONPATH:+$BENCH_PYTHONPATH:}$repo:$site" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HYDRA_FULL_ERROR=1
export PEFTBENCH_CACHE="$out/cache"

source "$repo/scripts/bench_lib.sh"
config=peftbench/model_configs/llama2_7b.json
pb=(python3 -m peftbench)
common=(train.max_steps="$steps" "hydra.sweep.dir=$out/hydra/\${run.name}" "hydra.run.dir=$out/hydra/\${run.name}")

for section in $sections; do
  case $section in
    env)
      { nvidia-smi; python3 -c 'import torch,transformers,peft,trl,bitsandbytes,datasets;
print({m.__name__: m.__version__ for m in (torch,transformers,peft,trl,bitsandbytes,datasets)})';
        python3 -m pip list 2>/dev/null | grep -i -E "liger|triton|flash"; ls "$bundle"; } > "$out/logs/env.log" 2>&1
      tail -4 "$out/logs/env.log" ;;
    a_stock)
      for m in $methods; do
        run stock_a python3 scripts/stock_baseline.py --method "$m" --config $config --steps "$steps" --out "$out/stock_a.csv"
      done ;;
    a_default)
      run peftbench_a_default "${pb[@]}" -m +recipe=family_7b_synthetic method="${methods// /,}" \
          run.name=a_default "run.results_dir=$out/results/a_default" "${common[@]}" ;;
    a_each)  # each method in a fresh process, as the stock script runs them: nothing left over from an earlier point.
             # EACH_TIMEOUT=S: each process is stopped after S seconds (timeout -k 10), so one slow point (GaLore's first
             # step) cannot take the time of the methods after it; a stopped point leaves no record, its log says rc=124
      limit=()
      if [ -n "${EACH_TIMEOUT:-}" ]; then limit=(timeout -k 10 "$EACH_TIMEOUT"); fi
      for m in ${EACH_METHODS:-$methods}; do
        run peftbench_a_each "${limit[@]}" "${pb[@]}" +recipe=family_7b_synthetic sweep=none method="$m" run.name=a_each \
            "run.results_dir=$out/results/a_each" train.max_steps="$steps" "hydra.run.dir=$out/hydra/a_each_$m"
      done ;;
    ab)  # stock and peftbench's profiles alternated, a fresh process each, AB_ROUNDS times (order reversed every other
         # round): the spread from one process to the next, measured beside the ratios
      for r in $(seq "${AB_ROUNDS:-2}"); do
        for m in ${AB_METHODS:-lora}; do
          sides=(stock ${AB_PROFILES:-default fast})
          if (( r % 2 == 0 )); then sides=($(printf '%s\n' "${sides[@]}" | tac)); fi
          for side in "${sides[@]}"; do
            if [ "$side" = stock ]; then
              run ab python3 scripts/stock_baseline.py --method "$m" --config $config --steps "$steps" --out "$out/stock_ab.csv"
            else  # a side is PROFILE, or LABEL=PROFILE,OVERRIDE,... (e.g. fastnl=fast,profile.use_liger_kernel=false)
              label=${side%%=*} spec=${side#*=} extra=()
              if [[ $spec == *,* ]]; then IFS=, read -ra extra <<< "${spec#*,}"; fi
              # one results folder per round and side: a point already in a folder would not train again
              run ab "${pb[@]}" +recipe=family_7b_synthetic sweep=none method="$m" profile="${spec%%,*}" "${extra[@]}" \
                  run.name=ab "run.results_dir=$out/results/ab_${label}_r$r" train.max_steps="$steps" \
                  "hydra.run.dir=$out/hydra/ab_${label}_${m}_r$r"
            fi
          done
        done
      done ;;
    profile)  # torch.profiler over 2 steady-state steps of stock and of peftbench (diagnosis; not for tokens/s)
      for point in ${PROFILE_METHODS:-lora}; do  # METHOD, or METHOD:PROFILE for peftbench's side (default: default)
        m=${point%%:*} p=default
        if [[ $point == *:* ]]; then p=${point#*:}; fi
        run profile python3 scripts/stock_baseline.py --method "$m" --config $config --steps 6 --profile-steps 2 \
            --profile-dir "$out/profile/stock_$m" --out "$out/stock_profile.csv"
        run profile "${pb[@]}" +recipe=family_7b_synthetic sweep=none method="$m" profile="$p" run.name=profile \
            train.max_steps=6 run.profile_steps=2 "run.results_dir=$out/results/profile_$p" "hydra.run.dir=$out/hydra/profile_${m}_$p"
      done ;;
    memory_trace)  # the tensors alive at the training's peak (requested bytes, by size), stock and peftbench
      for m in ${MEMTRACE_METHODS:-dora}; do
        run memory_trace python3 scripts/stock_baseline.py --method "$m" --config $config --steps 6 --memory-trace-steps 6 \
            --profile-dir "$out/profile/stock_$m" --out "$out/stock_memory_trace.csv"
        run memory_trace "${pb[@]}" +recipe=family_7b_synthetic sweep=none method="$m" run.name=memory_trace train.max_steps=6 \
            run.memory_trace_steps=6 "run.results_dir=$out/results/memory_trace" "hydra.run.dir=$out/hydra/memory_trace_$m"
      done ;;
    a_fast)
      fast=${FAST_METHODS:-$methods}
      run peftbench_a_fast "${pb[@]}" -m +recipe=family_7b_synthetic method="${fast// /,}" profile=fast \
          run.name=a_fast "run.results_dir=$out/results/a_fast" "${common[@]}" ;;
    compile)  # the fast profile's regional compile with each checkpointing plan: one fresh process and results
              # folder per point, METHOD:PLAN[:OVERRIDE,...] (e.g. lora:all:profile.compile=off, or the planner's
              # lora:auto:profile.memory_budget_gib=24); stock beside it with `a_stock`
      for point in ${COMPILE_POINTS:-lora:off lora:every_2 lora:every_4 lora:all lora:all_offload qlora:off qlora:all qlora:all_offload}; do
        IFS=: read -r m plan spec <<< "$point"
        extra=()
        if [ -n "$spec" ]; then IFS=, read -ra extra <<< "$spec"; fi
        label=${m}_${plan}${spec:+_$(printf %s "$spec" | tr -c 'A-Za-z0-9_' _)}
        run compile "${pb[@]}" +recipe=family_7b_synthetic sweep=none method="$m" profile="${COMPILE_PROFILE:-fast}" \
            profile.checkpointing="$plan" "${extra[@]}" run.name=compile "run.results_dir=$out/results/compile_$label" \
            train.max_steps="$steps" "hydra.run.dir=$out/hydra/compile_$label"
      done ;;
    qlora7b_mb1)
      run qlora7b_mb1 "${pb[@]}" +recipe=qlora_7b model.init=random data=synthetic train.per_device_train_batch_size=1 \
          run.name=qlora7b_mb1 "run.results_dir=$out/results/qlora7b_mb1" run.warmup_steps=3 run.save_adapter=false \
          "${common[@]}" ;;
    qlora70b)
      run qlora70b "${pb[@]}" +recipe=qlora_70b "run.results_dir=$out/results/qlora70b" \
          "hydra.run.dir=$out/hydra/qlora70b" ;;
    overhead)
      run overhead python3 scripts/stock_baseline.py --method lora --config $config --steps "${OVERHEAD_STEPS:-$steps}" \
          --callback-overhead --repeats "${OVERHEAD_REPEATS:-3}" --arms "${OVERHEAD_ARMS:-none,peftbench}" --out "$out/stock_overhead.csv" ;;
    measure)  # the stock script, unchanged, under `peftbench measure`: the callback's record beside the script's own timer
      for m in ${MEASURE_METHODS:-lora}; do
        run measure python3 -m peftbench.measure --results-dir "$out/results/measure" --run-id "stock-$m" --warmup-steps 3 \
            -- python3 scripts/stock_baseline.py --method "$m" --config $config --steps "$steps" --out "$out/stock_measure.csv"
      done
      python3 - "$out" <<'PY' | tee -a "$out/logs/measure.log"
import csv, json, sys
from pathlib import Path
out = Path(sys.argv[1])
for row in csv.DictReader(open(out / "stock_measure.csv")):
    rec = json.loads((out / "results" / "measure" / f"stock-{row['method']}" / "record.json").read_text())
    ratio = rec["tokens_per_s"] / float(row["tokens_per_s"])
    print(f"MEASURE {row['method']}: stock timer {float(row['tokens_per_s']):.1f} tok/s, callback {rec['tokens_per_s']:.1f} "
          f"(x{ratio:.4f}); peak allocated stock {float(row['peak_allocated_gib']):.3f} GiB, callback "
          f"{rec['gpu_allocated_gib_peak']:.3f}; real tokens {rec['real_tokens']}; method {rec['method']}; "
          f"attached {rec['attached']}; unmeasured {rec['unmeasured']}")
PY
      ;;
    b_stock)
      for m in $b_methods; do
        run stock_b python3 scripts/stock_baseline.py --method "$m" --config $config --steps "$steps" --workload gsm8k \
            --data "${PEFTBENCH_DATA:?}/gsm8k/train.jsonl" --tokenizer "${TOKENIZER:?}" --out "$out/stock_b.csv"
      done ;;
    b_default)
      run peftbench_b_default "${pb[@]}" -m +recipe=family_7b model.init=random data=gsm8k_local method="${b_methods// /,}" \
          "model.tokenizer=${TOKENIZER:?}" data.eval_file=null data.max_train_samples=512 run.warmup_steps=3 \
          run.save_adapter=false run.name=b_default "run.results_dir=$out/results/b_default" "${common[@]}" ;;
    *) echo "unknown section $section"; exit 2 ;;
  esac
done
python3 scripts/gpu_tables.py "$out" > "$out/summary.md" 2>> "$out/logs/tables.log"; cat "$out/summary.md"
