#!/usr/bin/env bash
# H200 call 38: unsloth driven directly (its peaks set the budgets), the stock script, and the fast profile with
# gc_freeze, each point a fresh process. Every command is echoed into each OUT's commands.txt.
set -u
O=/tmp/o/r38; mkdir -p $O
export STEPS=12
peak() { python3 -c "import csv,sys; r={x['method']: x for x in csv.DictReader(open(sys.argv[1]))}; print(round(float(r[sys.argv[2]]['peak_allocated_gib']), 2))" "$@"; }
echo "== unsloth direct $(date +%T)"
BUNDLE=.whleng UNSLOTH_METHODS="lora qlora" PEFTBENCH_CACHE=/tmp/pbcache STEPS=12 scripts/engines_benchmark.sh $O/eng env direct >> $O/all.log 2>&1
cat $O/eng/direct.csv
lp=$(peak $O/eng/direct.csv lora); qp=$(peak $O/eng/direct.csv qlora)
echo "unsloth peaks: lora $lp qlora $qp"
export BUNDLE=.whlmin
echo "== stock $(date +%T)"
METHODS="lora qlora" scripts/gpu_benchmark.sh $O/core env a_stock >> $O/all.log 2>&1
cut -d, -f1,7,8,10 $O/core/stock_a.csv
sp=$(peak $O/core/stock_a.csv lora)
echo "== fast $(date +%T)"
COMPILE_POINTS="lora:auto:profile.memory_budget_gib=$lp qlora:auto:profile.memory_budget_gib=$qp lora:all lora:auto:profile.memory_budget_gib=$sp" \
  scripts/gpu_benchmark.sh $O/core compile >> $O/all.log 2>&1
echo "== fast again $(date +%T)"
COMPILE_POINTS="lora:auto:profile.memory_budget_gib=$lp lora:all lora:all:profile.gc_freeze=false" \
  scripts/gpu_benchmark.sh $O/core2 compile >> $O/all.log 2>&1
echo "== done $(date +%T)"
