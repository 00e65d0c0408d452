import glob, json, sys
for p in sorted(glob.glob(sys.argv[1] + "/**/record.json", recursive=True)):
    r = json.load(open(p))
    if r.get("status") != "ok":
        print(p, r.get("status"), str(r.get("error"))[:200]); continue
    tok = r["real_tokens"] / r["steps"]
    print(f"{p.split('/results/')[-1][:70]:70s} {r['method']:6s} {r.get('checkpointing_plan')!s:20s} tok/s {r['tokens_per_s']:8.0f} median-step {tok / r['step_time_median_s']:8.0f} "
          f"peak {r['gpu_allocated_gib_peak']:.2f} pred {r.get('predicted_peak_gib') or 0:.2f} budget {r.get('memory_budget_gib') or 0:.2f} gc {r.get('gc_full_collections')}/{r.get('gc_pause_max_s') or 0:.3f}s frozen {r.get('gc_frozen_objects')} compile {r.get('time_compile_s') or 0:.1f}")
    print("    steps", r.get("step_times_s"))
