# Shared by gpu_benchmark.sh and engines_benchmark.sh (sourced; expects $out, the output folder).

run() {  # run LOGNAME CMD...: echo the command, run it, keep its log; a failing command does not stop the rest
    local log="$out/logs/$1.log"; shift
    echo "$*" >> "$out/commands.txt"
    echo "+ $*" | tee -a "$log"
    local t0=$SECONDS
    "$@" >> "$log" 2>&1
    echo "  rc=$? in $((SECONDS - t0))s" | tee -a "$log"
}
