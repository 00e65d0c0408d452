# H200 call 37 (the device tool's command, run in the repo root; BUNDLE .whlmin = scripts/build_gpu_bundle.sh)
O=/tmp/o/r37; mkdir -p $O; export BUNDLE=.whlmin STEPS=12 BENCH_PYTHONPATH=$PWD/scripts/host_monitor
pt(){ n=$1; shift; env "$@" PEFTBENCH_HOST_MONITOR=$O/$n.mon COMPILE_POINTS=lora:all scripts/gpu_benchmark.sh $O/$n compile >>$O/all.log 2>&1; echo "== $n $*" >> $O/summary.txt; python3 scripts/host_monitor/summarize.py $O/$n.mon $O/$n/results/compile_lora_all/*/record.json >> $O/summary.txt 2>&1; tail -25 $O/summary.txt | head -3; }
METHODS=lora scripts/gpu_benchmark.sh $O/stock env a_stock >>$O/all.log 2>&1; cat $O/stock/stock_a.csv | cut -c1-200
pt c1 X=1
pt d1 X=1
pt n1 TORCH_WARM_POOL=0
pt t1 TORCHINDUCTOR_COMPILE_THREADS=1
pt d2 X=1
pt n2 TORCH_WARM_POOL=0
pt d3 X=1
pt n3 TORCH_WARM_POOL=0
nproc; cat $O/summary.txt | head -150
tar czf $OUT/r37.tgz --exclude=cache -C /tmp/o r37; ls -la $OUT
