#!/usr/bin/env bash
# Mutation testing of peftbench's pure core with mutmut: each module mutated alone, against its own narrow tests.
# Usage: scripts/mutation.sh [MODULE...]        (default: records metrics memory checks)
# Needs `pip install -e ".[mutation]"`. Runs in a scratch copy of the tracked files (mutmut writes `mutants/` beside
# the code it mutates), with PYTHONPATH cleared so the tests import the mutated copy. Writes into
# ${MUTATION_OUT:-results/mutation}: <module>.txt (every mutant's status, then each survivor's diff) and summary.md
# (killed / survived / no test / timeout per module, the score, the command, the time each took).
# MUTATION_JOBS (default 2) is mutmut's --max-children: keep it low on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=${MUTATION_OUT:-$repo/results/mutation}
jobs=${MUTATION_JOBS:-2}
modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(records metrics memory checks)

# Each module's tests: fast unit tests only (the CLI/subprocess tests of the same code are left out: too slow per
# mutant). `not gone_from` leaves out test_scrub.py's end-to-end case, which runs the CLI twice; the memory tests leave
# out those that only exercise PEFT. The metrics selection takes from test_callback_parts.py only the tests of metrics'
# own helpers (phases, marks, batch counts, tensor and file bytes, the RSS high-water mark), not its PEFT and datasets
# cases.
tests_for() {
    case $1 in
        records) echo '"tests/test_records_core.py", "tests/test_scrub.py", "-k", "not gone_from"' ;;
        metrics) echo '"tests/test_metrics_core.py", "tests/test_memory_model.py", "tests/test_callback_parts.py", "-k",
                       "steady_state or metrics or pauses or batch_counts or trainable_tensor or saved_weights or high_water"' ;;
        memory) echo '"tests/test_memory_model.py", "tests/test_gpu_paths.py", "tests/test_methods.py", "-k",
                      "(memory or fast_profile or optimizer_states_at_the_7b) and not runner_counts and not without_liger"' ;;
        checks) echo '"tests/test_checks_core.py"' ;;
        *) echo "scripts/mutation.sh: no tests listed for module $1" >&2; exit 2 ;;
    esac
}

command -v mutmut >/dev/null || { echo 'mutmut not installed: pip install -e ".[mutation]"' >&2; exit 2; }
mkdir -p "$out"
summary=$out/summary.md
{
    echo "# Mutation testing of the pure core"
    echo
    echo "mutmut $(python -c 'import importlib.metadata as m; print(m.version("mutmut"))'), commit" \
         "$(git rev-parse --short HEAD)$([ -z "$(git status --porcelain peftbench tests)" ] || echo ' (with uncommitted changes)'), $(date -u +%F)," \
         "$(nproc) CPU cores, --max-children $jobs."
    echo "Command: \`scripts/mutation.sh ${modules[*]}\` (per module: \`mutmut run --max-children $jobs\` in a scratch copy)."
    echo
    echo "| module | mutants | killed | survived | no test | timeout / other | score (killed / mutants tested) | time |"
    echo "|---|---|---|---|---|---|---|---|"
} >"$summary"

work=
trap '[ -z "$work" ] || rm -rf "$work"' EXIT
for module in "${modules[@]}"; do
    work=$(mktemp -d)
    git ls-files -z peftbench tests recipes pyproject.toml results/h100 ':(glob)results/h200/**/record.json' |
        xargs -0 -I{} cp --parents {} "$work"
    cp -r --parents $(git ls-files --others --exclude-standard peftbench tests) "$work" 2>/dev/null || true
    cat >>"$work/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["peftbench"]
only_mutate = ["peftbench/$module.py"]
also_copy = ["recipes", "results/h100", "results/h200"]  # the measured peaks the memory tests read (h200: records only)
pytest_add_cli_args_test_selection = [$(tests_for "$module")]
pytest_add_cli_args = ["-q", "-p", "no:randomly", "-W", "ignore"]
EOF
    start=$(date +%s)
    (cd "$work" && env -u PYTHONPATH mutmut run --max-children "$jobs" >"$work/run.log" 2>&1) || {
        echo "mutmut run failed for $module; its log:" >&2; tail -40 "$work/run.log" >&2; exit 1; }
    seconds=$(( $(date +%s) - start ))
    (cd "$work" && env -u PYTHONPATH mutmut results --all true) >"$work/results.txt" 2>&1 || true
    # lines look like `    peftbench.records.x_scrub__mutmut_3: survived`
    count() { grep -c ": $1\$" "$work/results.txt" || true; }
    total=$(grep -c "__mutmut_" "$work/results.txt" || true)
    killed=$(count killed); survived=$(count survived); notest=$(count "no tests")
    other=$(( total - killed - survived - notest ))
    tested=$(( killed + survived + other ))
    score=$(python -c "print(f'{100 * $killed / $tested:.1f}%' if $tested else 'n/a')")
    echo "| $module | $total | $killed | $survived | $notest | $other | $score | ${seconds} s |" >>"$summary"
    {
        echo "# $module: every mutant's status (mutmut results --all true), then the diff of each survivor"
        echo "# tests: $(tests_for "$module")"
        cat "$work/results.txt"
        for name in $(grep -E ": survived\$" "$work/results.txt" | sed 's/:.*//; s/^ *//'); do
            echo; echo "## $name"
            (cd "$work" && env -u PYTHONPATH mutmut show "$name") 2>&1 | sed -n '1,40p'
        done
    } >"$out/$module.txt"
    rm -rf "$work"; work=
done
cat "$summary"
