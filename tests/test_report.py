"""The leaderboard report: ranking, mean ± std and failed rows from hand-made records; the HTML rendered in Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from peftbench import records, report
from peftbench.report_plots import pareto_front

H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"


def fake(method: str, seed: int, gpu: str, status: str = "ok", score: float | None = None, **extra) -> dict:
    """A record shaped like the runner's, with the numbers a test wants."""
    run_id = f"{method}-m7b-s{seed}-{'h100' if 'H100' in gpu else 'a100'}"
    rec = {
        "run_id": run_id,
        "run_name": f"sweep-{run_id[-4:]}",
        "status": status,
        "method": method,
        "engine": "peft",
        "model": "m7b",
        "model_source": "org/m7b",
        "model_init": "pretrained",
        "quality_valid": True,
        "dataset": "topics",
        "seed": seed,
        "gpu_name": gpu,
        "gpu_count": 1,
        "precision": "bf16",
        "config": {"method": {"name": method, "r": 16}, "train": {"seed": seed}, "run": {"results_dir": "x"}},
        "hyperparameters": {"max_length": 512, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2},
        "versions": {"torch": "2.13.0", "peft": "0.21.2"},
    }
    if status == "ok":
        rec.update(
            score=score,
            gpu_allocated_gib_peak=10.0 + seed,
            tokens_per_s=1000.0 + 100 * seed,
            trainable_params=4_000_000,
            trainable_pct=0.06,
            adapter_bytes=16_000_000,
            time_train_s=60.0,
            loss_curve=[[1, 2.0], [2, 1.5 - 0.1 * seed], [3, 1.2]],
        )
    else:  # as the runner writes a failure: no measurements, no device (the OOM row lands with its sweep's GPU)
        rec["error"] = "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
        del rec["gpu_name"], rec["gpu_count"]
    rec.update(extra)
    return rec


@pytest.fixture
def hand_made(tmp_path) -> Path:
    """Two seeds of lora and qlora, a base row and an OOM full FT on an H100; lora and dora on an A100."""
    results = tmp_path / "results"
    recs = [
        fake("lora", 0, H100, score=0.60),
        fake("lora", 1, H100, score=0.64),
        fake("qlora", 0, H100, score=0.58),
        fake("qlora", 1, H100, score=0.56),
        fake(
            "base",
            0,
            H100,
            score=0.50,
            trainable_params=None,
            tokens_per_s=None,
            gpu_allocated_gib_peak=None,
            loss_curve=None,
        ),
        fake("full", 0, H100, status="oom"),
        fake("lora", 0, A100, score=0.61),
        fake("dora", 0, A100, score=0.63),
        fake("ia3", 0, A100, score=0.99, model_init="random", quality_valid=False),
    ]
    for rec in recs:
        records.write_record(results, rec, rebuild=False)
    records.write_table(results)
    return results


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}")[1].split("\n## ")[0]


def table_rows(md_section: str) -> list[list[str]]:
    lines = [ln for ln in md_section.splitlines() if ln.startswith("| ")][1:]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]


def test_ranking_mean_std_and_oom_row(hand_made, tmp_path):
    paths = report.write_report(hand_made, tmp_path / "out")
    md = paths["md"].read_text()
    h100 = table_rows(section(md, f"m7b on {H100}"))
    # ranked by score within the H100 section, the OOM row kept below the ranked ones, with its error
    assert [(r[0], r[1], r[3]) for r in h100] == [
        ("1", "lora", "ok (2 seeds)"),
        ("2", "qlora", "ok (2 seeds)"),
        ("3", "base", "ok"),
        ("", "full", "OOM"),
    ]
    assert "CUDA out of memory" in h100[3][-1]
    cols = [c.strip() for c in re.search(r"\| rank \|(.*)\|", md).group(1).split(" | ")]
    score, delta = cols.index("score") + 1, cols.index("Δ score vs base") + 1
    assert h100[0][score] == "0.62 ± 0.028"  # mean and sample std of 0.60 and 0.64
    assert h100[1][score] == "0.57 ± 0.014"
    assert h100[0][delta] == "0.12 ± 0.028"  # delta over the base row of the same model
    a100 = table_rows(section(md, f"m7b on {A100}"))
    # random-init ia3 has the best raw score but no meaningful quality: shown, not ranked, its score n/a
    assert [(r[0], r[1]) for r in a100] == [("1", "dora"), ("2", "lora"), ("", "ia3")]
    assert a100[2][score] == "n/a†"
    assert "| 0.99" not in md
    for label in ("Sequence length**: 512", "Batch**: 4 per device × 2 accumulation", "torch 2.13.0", "peft 0.21.2"):
        assert label in md
    assert {"pareto", "throughput", "trainable_params", "loss_curves"} <= set(paths)
    assert all(Path(p).stat().st_size > 1000 for p in paths.values())


def test_html_tables_and_csv(hand_made, tmp_path):
    import base64

    paths = report.write_report(hand_made, tmp_path / "out")
    html = paths["html"].read_text()
    embedded = [base64.b64decode(m) for m in re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', html)]
    # the bar charts are SVG drawn from the rows (their PNGs are for report.md); the Pareto PNG and loss curves embedded
    assert sorted(embedded) == sorted(paths[n].read_bytes() for n in ("pareto", "loss_curves"))
    assert {"throughput", "trainable_params"} <= set(paths)
    runs = html.split('id="runs"')[1].split("</table>")[0]
    board = "".join(t.split("</table>")[0] for t in html.split('class="sortable board"')[1:])
    assert runs.count("<tr class=") == 9  # one row per run, the OOM one included
    assert board.count("<tr class=") == 7  # lora, qlora (2 seeds each), base, full OOM; lora, dora, ia3
    assert 'class="st-oom"' in board
    assert html.count('href="data:text/csv;base64,') == 1  # every run; the leaderboard CSV is built from the rows shown
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html


def test_metric_falls_back_when_absent(tmp_path):
    results = tmp_path / "r"
    for method, loss in (("lora", 1.0), ("dora", 0.8)):
        rec = fake(method, 0, H100, eval_loss=loss)
        rec.pop("score")
        records.write_record(results, rec)
    md = report.write_report(results)["md"].read_text()
    assert "ranked by eval loss (lower is better) within each model and GPU (no run has a value for score)" in md
    assert [r[1] for r in table_rows(md)] == ["dora", "lora"]
    with pytest.raises(SystemExit, match="not a report metric"):
        report.write_report(results, metric="scroe")


def test_variants_of_one_method_are_not_averaged(tmp_path):
    results = tmp_path / "r"
    for r, score in ((8, 0.5), (32, 0.7)):
        rec = fake("lora", 0, H100, score=score)
        rec["run_id"] += f"-r{r}"
        rec["config"]["method"]["r"] = r
        records.write_record(results, rec)
    rows = table_rows(report.write_report(results)["md"].read_text())
    assert [r[1] for r in rows] == ["lora (r=32)", "lora (r=8)"]


def test_an_option_older_records_lack_names_no_variant(tmp_path):
    """Two runs of one setup, the newer record holding an option added since (at one value): not `x=False` against
    `x=-`; what tells them apart is only their config, so each is named by its hash. A real difference (r) is still
    named."""
    results = tmp_path / "r"
    old, new, r32 = (fake("lora", 0, H100, score=s) for s in (0.5, 0.6, 0.7))
    new["run_id"] += "-new"
    new["config"]["profile"] = {"enforce_budget": False}
    r32["run_id"] += "-r32"
    r32["config"]["method"]["r"] = 32
    r32["config"]["profile"] = {"enforce_budget": False}
    for rec in (old, new, r32):
        records.write_record(results, rec)
    labels = [r[1] for r in table_rows(report.write_report(results)["md"].read_text())]
    assert not any("enforce_budget" in label for label in labels), labels
    assert re.fullmatch(r"lora \(r=32, config [0-9a-f]{6,}\)", labels[0]), labels
    assert len(set(labels[1:])) == 2 and all(re.fullmatch(r"lora \(r=16, config [0-9a-f]{6,}\)", x) for x in labels[1:])


def test_pareto_front():
    # (memory, score): lower memory and higher score are better; (3, 0.5) is beaten by (2, 0.6)
    points = [(1.0, 0.4), (2.0, 0.6), (3.0, 0.5), (4.0, 0.9)]
    assert pareto_front(points, higher_x=False, higher_y=True) == [0, 1, 3]


# -- the page as a browser shows it ------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(  # CI (.ci/run installs chromium) fails instead of skipping
    CHROMIUM is None and not os.environ.get("CI"), reason="chromium not installed (apt-get install -y chromium)"
)


def rendered_dom(html: Path, tmp_path: Path, fragment: str = "") -> str:
    """The DOM after the page's scripts ran, from headless Chromium with no network and a fresh profile."""
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        f"{html.resolve().as_uri()}{fragment}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def page_marker(dom: str, name: str) -> str:
    match = re.search(rf'<html[^>]* data-{name}="([^"]*)"', dom)
    assert match, f"data-{name} not set on <html>: the page's script did not finish"
    return match.group(1)


def visible_rows(dom: str, table_id: str) -> list[str]:
    body = dom.split(f'id="{table_id}"')[1].split("</tbody>")[0]
    return [row for row in re.findall(r"<tr class=[^>]*>", body) if "display: none" not in row]


@needs_chromium
def test_html_renders_in_chromium(hand_made, tmp_path):
    html = report.write_report(hand_made, tmp_path / "out")["html"]
    n_images = html.read_text().count("<img ")
    dom = rendered_dom(html, tmp_path)
    assert n_images == 2  # pareto (static), loss curves; the bar charts are SVG
    assert page_marker(dom, "images-loaded") == f"{n_images}/{n_images}"  # every <img> decoded, naturalWidth > 0
    assert page_marker(dom, "ready") == "1"
    assert len(visible_rows(dom, "runs")) == len(records.read_records(hand_made))  # one row per run
    # points with both score and memory: lora, qlora; lora, dora (base has no memory, random-init ia3 no score)
    assert page_marker(dom, "pareto-points") == "4"
    assert dom.count('class="point front"') + dom.count('class="point dominated"') == 4


@needs_chromium
def test_html_filter_pick_and_sort_in_chromium(hand_made, tmp_path):
    """The reader's choices (here carried in the URL fragment) filter the tables, re-draw the Pareto plot, sort."""
    html = report.write_report(hand_made, tmp_path / "out")["html"]
    dom = rendered_dom(html, tmp_path, f"#gpu={A100}&x=tokens_per_s&y=gpu_allocated_gib_peak&sort=-tokens/s")
    rows = visible_rows(dom, "runs")
    assert len(rows) == 3 and all(f'data-gpu="{A100}"' in r for r in rows)
    assert page_marker(dom, "pareto-points") == "3"  # random-init ia3 has memory and speed, so it is plotted
    assert page_marker(dom, "csv-rows") == "3"  # the leaderboard CSV holds the rows shown: A100's lora, dora, ia3
    searched = rendered_dom(html, tmp_path, "#q=qlora")
    assert page_marker(searched, "csv-rows") == "1" and len(visible_rows(searched, "runs")) == 2  # two qlora seeds
    assert "tokens/s (higher is better)" in dom and "peak GPU alloc (GiB) (lower is better)" in dom
    assert 'class="desc">tokens/s</th>' in dom


def test_sweep_writes_report(tiny_cfg, tmp_path):
    """A real (tiny) point through the runner, then the sweep's end-of-run callback writes the report."""
    from peftbench.runner import run_point
    from peftbench.sweep import PrintResults

    cfg = tiny_cfg("method=lora", "train.max_steps=2")
    assert run_point(cfg)["status"] == "ok"
    PrintResults().on_run_end(cfg)
    results = Path(cfg.run.results_dir)
    assert (results / "report.md").exists() and (results / "report.html").exists()
    assert "| 1 | lora |" in (results / "report.md").read_text()
    assert (results / "loss_curves.png").stat().st_size > 1000
    (results / "report.md").unlink()
    PrintResults().on_run_end(tiny_cfg("method=lora", "train.max_steps=2", "run.report=false"))
    assert not (results / "report.md").exists()


@needs_chromium
def test_screenshot_script(hand_made, tmp_path):
    """scripts/screenshot_report.sh writes the report if missing and shoots the whole page as a PNG."""
    import os
    import struct

    script = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_report.sh"
    out = tmp_path / "shot.png"
    env = {**os.environ, "PYTHONPATH": str(script.parents[1])}
    done = subprocess.run(
        ["bash", str(script), str(hand_made), str(out)], capture_output=True, text=True, env=env, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    head = out.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert width == 1400 and height > 2000  # the whole page, not one window of it
    # the page's own height (+40), not the script's 3000 px fallback for a page that never reported one
    assert "did not report its height" not in done.stderr and height != 3000 + 40, done.stderr[-2000:]
    assert done.stdout.strip().endswith(f"(1400x{height})")


def test_conditions_state_gpu_count_strategy_and_provenance(tmp_path):
    """A two-GPU FSDP run's section says so; whole numbers that pandas widened to floats read as integers."""
    results = tmp_path / "results"
    records.write_record(
        results,
        fake("full", 0, H100, score=0.7, gpu_count=2, world_size=2, strategy="fsdp", model_file_sha256="abc123"),
        rebuild=False,
    )
    records.write_record(
        results, fake("lora", 0, H100, status="oom", world_size=2, strategy="fsdp", hyperparameters={}), rebuild=False
    )
    records.write_table(results)
    text = report.write_report(results)["md"].read_text()
    assert "**Parallelism**: 2 GPU(s), fsdp" in text
    assert "× 2 process(es)" in text and "file sha256 abc123" in text
    assert "**Sequence length**: 512\n" in text


# -- identity: several engines and profiles per method; every label on its own bar and point ---------------------------
# (method, engine, profile, tokens/s, trainable params, score, stderr) and, written by hand, what must be shown
ENGINE_ROWS = [
    ("lora", "peft", "fast", 12963.2, 39_976_960, 0.640, 0.010),
    ("lora", "peft", "default", 6639.2, 39_976_960, 0.630, 0.010),
    ("lora", "unsloth", "default", 9926.4, 39_976_960, 0.600, 0.010),
    ("lora", "liger", "default", 8271.0, 39_976_960, 0.560, 0.010),
    ("qlora", "peft", "fast", 9395.1, 39_976_960, 0.550, 0.010),
    ("qlora", "unsloth", "default", 9912.0, 39_976_960, 0.500, 0.010),
    ("full", "peft", "default", 9332.4, 6_738_415_616, 0.700, 0.010),
    ("full", "unsloth", "default", 8365.0, 6_738_415_616, 0.480, 0.010),
]
# (label in the table, engine) -> (tokens/s text, trainable params text, rank text): ranks by score; `=k` where the gap
# to the group's best is below √(0.01² + 0.01²) = 0.01414: 0.64/0.63 tie, 0.56/0.55 tie, 0.60/0.56 and 0.50/0.48 not
SHOWN = {
    ("full", "peft"): ("9,332", "6.74 B", "1"),
    ("lora (profile=fast)", "peft"): ("12,963", "40 M", "=2"),
    ("lora (profile=default)", "peft"): ("6,639", "40 M", "=2"),
    ("lora", "unsloth"): ("9,926", "40 M", "4"),
    ("lora", "liger"): ("8,271", "40 M", "=5"),
    ("qlora", "peft"): ("9,395", "40 M", "=5"),
    ("qlora", "unsloth"): ("9,912", "40 M", "7"),
    ("full", "unsloth"): ("8,365", "6.74 B", "8"),
}


@pytest.fixture
def engines_table(tmp_path) -> Path:
    results = tmp_path / "engines"
    for i, (method, engine, profile, tps, params, score, se) in enumerate(ENGINE_ROWS):
        rec = fake(
            method,
            0,
            H100,
            score=score,
            score_stderr=se,
            tokens_per_s=tps,
            trainable_params=params,
            engine=engine,
            gpu_allocated_gib_peak=5.0 + i,
            run_id=f"{method}-{engine}-{profile}-{i}",
        )
        rec["config"].update(profile={"name": profile}, engine={"name": engine})
        records.write_record(results, rec, rebuild=False)
    records.write_table(results)
    return results


def svg_items(dom: str, cls: str) -> dict[str, dict[str, str]]:
    """{data-key: {text class: text}} of the SVG groups of one class, as Chromium drew them."""
    import html as htmllib

    out = {}
    for key, body in re.findall(rf'<g class="{cls}[^"]*" data-key="([^"]*)">(.*?)</g>', dom, flags=re.S):
        texts = dict(re.findall(r'<text class="(\w+)"[^>]*>([^<]*)</text>', body))
        assert htmllib.unescape(key) not in out, f"two {cls} groups for one row: {key}"
        out[htmllib.unescape(key)] = {k: htmllib.unescape(v) for k, v in texts.items()}
    return out


def board_cells(dom: str) -> dict[str, dict[str, str]]:
    """{data-key: {label, engine, rank, tokens_per_s, trainable_params}} of the rendered leaderboard rows."""
    import html as htmllib

    out = {}
    for tr in re.findall(r'<tr class="st-ok"[^>]*data-key="[^"]*"[^>]*>.*?</tr>', dom, flags=re.S):
        if "data-csv" not in tr:
            continue
        key = htmllib.unescape(re.search(r'data-key="([^"]*)"', tr).group(1))
        cells = [htmllib.unescape(c) for c in re.findall(r"<td[^>]*>([^<]*)</td>", tr)]
        tps = re.search(r'class="c-tokens_per_s"[^>]*>([^<]*)<', tr)
        params = re.search(r'class="sec c-trainable_params"[^>]*>([^<]*)<', tr)
        out[key] = {
            "rank": cells[0],
            "label": cells[1],
            "engine": cells[2],
            "tokens_per_s": htmllib.unescape(tps.group(1)),
            "trainable_params": htmllib.unescape(params.group(1)),
        }
    return out


@needs_chromium
def test_every_value_on_its_own_bar_and_point_in_chromium(engines_table, tmp_path):
    html = report.write_report(engines_table, tmp_path / "out")["html"]
    dom = rendered_dom(html, tmp_path)
    board = board_cells(dom)
    assert {
        (c["label"], c["engine"]): (c["tokens_per_s"], c["trainable_params"], c["rank"]) for c in board.values()
    } == SHOWN
    for col, bars in (
        ("tokens_per_s", svg_items(dom.split('id="bars-tokens_per_s"')[1].split("</svg>")[0], "bar")),
        ("trainable_params", svg_items(dom.split('id="bars-trainable_params"')[1].split("</svg>")[0], "bar")),
    ):
        assert set(bars) == set(board)  # one bar per row, keyed by the row's identity
        for key, bar in bars.items():
            row = board[key]
            assert bar["value"] == row[col], (col, key)  # the value on the bar is its own row's
            assert bar["name"] == f"{row['label']} · {row['engine']}"  # several engines here: the engine is named
        values = [b["value"] for b in bars.values()]
        if col == "tokens_per_s":
            assert sorted(values) == sorted(v[0] for v in SHOWN.values())  # each value exactly once (9,395... included)
    points = svg_items(dom.split('id="pareto"')[1].split("</svg>")[0], "point")
    assert set(points) == set(board)
    assert {p["label"] for p in points.values()} == {f"{r['label']} · {r['engine']}" for r in board.values()}
    assert len({p["label"] for p in points.values()}) == len(points)  # no two points read the same
    for key, point in points.items():
        assert point["label"] == f"{board[key]['label']} · {board[key]['engine']}"
    assert dom.count('class="yerr"') == len(points)  # every score has its ±1 stderr bar
    assert dom.count('<td class="tie"') == 4  # =2 twice, =5 twice


def test_png_bar_labels_sit_on_their_own_bars(engines_table):
    """The matplotlib bars: each value annotation at its own bar's position, whose tick names that row."""
    from peftbench.report_plots import bar_figure, method_colours

    frame, _ = report.load_runs(engines_table)
    rows = report.leaderboard(frame, "score")
    for col, index in (("tokens_per_s", 0), ("trainable_params", 1)):
        ax = bar_figure(rows, col, method_colours({"lora", "qlora", "full"}), log=col == "trainable_params").axes[0]
        ticks = {round(t): lab.get_text() for t, lab in zip(ax.get_yticks(), ax.get_yticklabels())}
        names = {}
        for text in ax.texts:
            names[ticks[round(text.xy[1])]] = text.get_text()
        expected = {f"{label} · {engine}": shown[index] for (label, engine), shown in SHOWN.items()}
        assert names == expected


def test_engines_report_markdown_ties_and_labels(engines_table, tmp_path):
    md = report.write_report(engines_table, tmp_path / "out")["md"].read_text()
    rows = table_rows(section(md, f"m7b on {H100}"))
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("1", "full", "peft"),
        ("=2", "lora (profile=fast)", "peft"),
        ("=2", "lora (profile=default)", "peft"),
        ("4", "lora", "unsloth"),
        ("=5", "lora", "liger"),
        ("=5", "qlora", "peft"),
        ("7", "qlora", "unsloth"),
        ("8", "full", "unsloth"),
    ]
    wins = section(md, f"m7b on {H100}").split("**What wins here.**")[1].splitlines()[0]
    assert "Best score: **full · peft** (0.7, stderr 0.01)" in wins
    assert "Fastest: **lora (profile=fast) · peft** at 12,963 tokens/s" in wins
    assert "Smallest peak GPU alloc (GiB): **lora (profile=fast) · peft** at 5.00 GiB" in wins
    assert "e+0" not in md


def test_failed_row_names_what_set_it_apart_and_memory(tmp_path):
    """A batch-size sweep: the OOM at 512 says 512, with the memory model's prediction beside the GPU's size; the
    conditions come from the ok rows only (no "device not recorded" block), with the steps actually timed."""
    results = tmp_path / "bs"
    for bs in (8, 64):
        rec = fake(
            "lora", 0, H100, score=0.6, run_id=f"lora-bs{bs}", steps=10, steady_state_steps=7, warmup_steps_excluded=3
        )
        rec["config"]["train"]["per_device_train_batch_size"] = bs
        records.write_record(results, rec, rebuild=False)
    oom = fake("lora", 0, H100, status="oom", run_id="lora-bs512", predicted_peak_gib=143.217)
    oom["config"]["train"]["per_device_train_batch_size"] = 512
    records.write_record(results, oom, rebuild=False)
    short = fake(
        "qlora", 0, H100, score=0.5, run_id="qlora-short", steps=2, steady_state_steps=2, warmup_steps_excluded=3
    )
    records.write_record(results, short, rebuild=False)
    records.write_table(results)
    md = report.write_report(results)["md"].read_text()
    assert "device not recorded" not in md
    oom_row = [r for r in table_rows(section(md, f"m7b on {H100}")) if r[3] == "OOM"][0]
    assert oom_row[1] == "lora (per_device_train_batch_size=512)"
    assert "at per_device_train_batch_size=512" in oom_row[-1]
    assert "memory model predicted 143.22 GiB vs 74.51 GiB on the GPU" in oom_row[-1]  # 80 GB = 74.51 GiB
    assert "10 steps, throughput over the last 7 (first 3 left out as warm-up) (lora" in md
    assert "2 steps, every one timed (shorter than its 3-step warm-up) (qlora)" in md


def test_merge_folders_dedupe_and_provenance(hand_made, tmp_path):
    """Two folders from two machines (one run in both): one leaderboard, the duplicate once, every row's source."""
    other = tmp_path / "other"
    twin = records.read_records(hand_made)[0]
    records.write_record(other, twin, rebuild=False)
    records.write_record(
        other, fake("lora", 0, "NVIDIA GeForce RTX 4090", score=0.55, run_id="lora-4090"), rebuild=False
    )
    records.write_table(other)
    out = tmp_path / "published"
    assert report.main([str(hand_made), str(other), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## m7b on NVIDIA GeForce RTX 4090" in md and f"## m7b on {H100}" in md and f"## m7b on {A100}" in md
    assert md.startswith("# peftbench leaderboard\n\n10 runs from 2 results folders merged by run id (1 duplicate")
    runs = (out / "runs.csv").read_text()
    assert f"duplicate in {other}" in runs and str(other) in runs
    assert (out / "index.html").read_text() == (out / "report.html").read_text()
    with pytest.raises(SystemExit):
        report.main([str(hand_made), str(other)])  # several folders need --out


def test_folklore_only_where_rows_exist(tmp_path):
    results = tmp_path / "f"
    records.write_record(
        results,
        fake(
            "lora",
            0,
            H100,
            score=0.60,
            score_stderr=0.02,
            total_params=6.74e9,
            trainable_pct=0.59,
            method_config={"name": "lora", "r": 16},
        ),
        rebuild=False,
    )
    records.write_record(
        results,
        fake(
            "full", 0, H100, score=0.62, score_stderr=0.02, total_params=6.74e9, trainable_pct=100.0, adapter_bytes=None
        ),
        rebuild=False,
    )
    records.write_table(results)
    md = report.write_report(results)["md"].read_text()
    folk = section(md, "Folklore, measured")
    assert (
        "LoRA r=16 on a 7B model needs ~16-18 GB" in folk and f"lora · peft on {H100}: 10.7 GB peak allocated" in folk
    )
    assert "Full fine-tuning of a 7B model needs ~84-112 GB" in folk
    assert "Δ -0.020 ± 0.028 (within one combined stderr: tied)" in folk
    assert "QLoRA" not in folk  # no QLoRA row here: the claim is not shown


# -- the speed-memory frontier: every configuration of a method, its Pareto front, each point labelled by identity ----
# (engine, profile, checkpointing plan as the record says it, tokens/s, peak GiB); on the front by hand (less memory,
# more speed): unsloth (least memory), fast every_2 (faster than unsloth at more memory), fast off (fastest); Liger
# and the default profile use more memory than unsloth and run slower: dominated.
FRONTIER_ROWS = [
    ("peft", "default", None, 6639.2, 15.25, False),
    ("liger", "default", None, 8270.9, 15.04, False),
    ("unsloth", "default", "unsloth", 9925.8, 13.88, True),
    ("peft", "fast", "off", 12963.2, 29.32, True),
    ("peft", "fast", "every_2", 11000.0, 23.00, True),
]


@pytest.fixture
def frontier_table(tmp_path) -> Path:
    results = tmp_path / "frontier"
    for i, (engine, profile, plan, tps, peak, _) in enumerate(FRONTIER_ROWS):
        rec = fake(
            "lora",
            0,
            H100,
            score=None,
            engine=engine,
            tokens_per_s=tps,
            gpu_allocated_gib_peak=peak,
            run_id=f"lora-{engine}-{profile}-{plan}-{i}",
        )
        rec["config"].update(
            profile={"name": profile, "checkpointing": plan if profile == "fast" else None},
            engine={"name": engine},
            train={"seed": 0, "gradient_checkpointing": True},
        )
        if plan == "unsloth":
            rec["engine_gradient_checkpointing"] = "unsloth"  # what an unsloth record says (results/h100/engines)
        elif profile == "fast":
            rec["profile_choices"] = {"gradient_checkpointing": plan == "all", "checkpointing_plan": plan}
        records.write_record(results, rec, rebuild=False)
    records.write_record(results, fake("qlora", 0, H100, score=None), rebuild=False)  # one config: no panel
    records.write_table(results)
    return results


def test_frontier_points_front_and_labels(frontier_table):
    frame, _ = report.load_runs(frontier_table)
    points = report.frontier_points(report.leaderboard(frame, "tokens_per_s"))
    assert {p["method"] for p in points} == {"lora"} and len(points) == 5
    by_engine_plan = {(p["engine"], p["plan"]): p for p in points}
    expected = {
        ("peft", "all"): False,
        ("liger", "all"): False,
        ("unsloth", "unsloth"): True,
        ("peft", "off"): True,
        ("peft", "every_2"): True,
    }  # the record's plan, or the Trainer's flag for the older ones
    assert {k: p["front"] for k, p in by_engine_plan.items()} == expected
    assert by_engine_plan[("unsloth", "unsloth")]["label"] == "lora · unsloth · ckpt unsloth"
    assert by_engine_plan[("peft", "every_2")]["label"].endswith(" · peft · ckpt every_2")
    assert by_engine_plan[("liger", "all")]["label"] == "lora · liger · ckpt all"


def test_frontier_png_labels_each_point_with_its_own_row(frontier_table, tmp_path):
    from peftbench.report_plots import ENGINE_COLOURS, frontier_figure

    frame, _ = report.load_runs(frontier_table)
    rows = report.leaderboard(frame, "tokens_per_s")
    points = {p["key"]: p for p in report.frontier_points(rows)}
    ax = frontier_figure(rows).axes[0]
    labels = {t.get_gid().removeprefix("label:"): t for t in ax.texts}
    assert set(labels) == set(points)
    for key, text in labels.items():
        assert text.get_text() == points[key]["label"] and text.xy == (points[key]["x"], points[key]["y"])
    dots = {c.get_gid().removeprefix("point:"): c for c in ax.collections if c.get_gid()}
    for key, dot in dots.items():
        assert tuple(dot.get_offsets()[0]) == (points[key]["x"], points[key]["y"])
        colour = "#{:02x}{:02x}{:02x}".format(*(int(round(255 * c)) for c in dot.get_facecolor()[0][:3]))
        assert colour == ENGINE_COLOURS[points[key]["engine"]]
    line = ax.lines[0]  # the dashed front: through the three front points, by memory
    assert list(zip(line.get_xdata(), line.get_ydata())) == [(13.88, 9925.8), (23.0, 11000.0), (29.32, 12963.2)]
    paths = report.write_report(frontier_table, tmp_path / "out")
    md, html = paths["md"].read_text(), paths["html"].read_text()
    assert "frontier" in paths and "![frontier](frontier.png)" in md and '<img alt="frontier"' in html
    section = md.split("## Speed–memory frontier")[1].split("\n## ")[0]
    assert "front lora · unsloth · ckpt unsloth (9,926 tok/s, 13.88 GiB); " in section
    assert section.index("ckpt every_2") < section.index("ckpt off (12,963") < section.index("dominated: ")
