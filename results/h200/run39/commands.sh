#!/usr/bin/env bash
# H200 call 39: more fresh processes of the unsloth-memory points (unsloth direct, then the fast profile at its
# measured peaks), and the fast profile without gc_freeze as the control.
set -u
O=/tmp/o/r39; mkdir -p $O
export STEPS=12
peak() { python3 -c "import csv,sys; r=[x for x in csv.DictReader(open(sys.argv[1])) if x['method'] == sys.argv[2]]; print(round(max(float(x['peak_allocated_gib']) for x in r), 2))" "$@"; }
echo "== unsloth direct $(date +%T)"
BUNDLE=.whleng UNSLOTH_METHODS="lora lora" PEFTBENCH_CACHE=/tmp/pbcache scripts/engines_benchmark.sh $O/eng env direct >> $O/all.log 2>&1
cat $O/eng/direct.csv
lp=$(peak $O/eng/direct.csv lora)
echo "unsloth lora peak: $lp (run 38: 13.88; qlora 5.09)"
export BUNDLE=.whlmin
echo "== fast $(date +%T)"
COMPILE_POINTS="lora:auto:profile.memory_budget_gib=$lp qlora:auto:profile.memory_budget_gib=5.09 lora:all:profile.gc_freeze=false" \
  scripts/gpu_benchmark.sh $O/core compile >> $O/all.log 2>&1
COMPILE_POINTS="lora:auto:profile.memory_budget_gib=$lp lora:all:profile.gc_freeze=false" \
  scripts/gpu_benchmark.sh $O/core2 compile >> $O/all.log 2>&1
echo "== unsloth qlora $(date +%T)"
BUNDLE=.whleng UNSLOTH_METHODS="qlora" PEFTBENCH_CACHE=/tmp/pbcache scripts/engines_benchmark.sh $O/eng2 direct >> $O/all.log 2>&1
cat $O/eng2/direct.csv
echo "== done $(date +%T)"
