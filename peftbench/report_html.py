"""report.html: one file that opens from disk with nothing else (no server, no network).

Static plots are the matplotlib PNGs as base64 data URIs; the Pareto plot, whose two axes the reader picks, is an
inline SVG drawn by ~150 lines of vanilla JS from JSON embedded in the page. Why no plotting library: inlining one
(plotly is ~3.5 MB) would buy little over a scatter, a frontier line and sortable tables, and could not break offline.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from peftbench.report_data import METRICS, QUALITY, TIE_NOTE, Row, conditions, did_not_finish, facet_title, facets, fmt_cell
from peftbench.report_data import fmt_number, folklore, plain, rank_text, ranking_text, shown_columns, sources_text
from peftbench.report_data import status_text, what_wins
from peftbench.report_plots import DOMINATED, bar_layout, error, method_colours, several_engines

FILTERS = (("model", "model"), ("gpu", "GPU"), ("method", "method"), ("engine", "engine"), ("status", "status"))
# Shown by default: what a reader compares first; the rest sit behind "all columns" so the table fits a laptop.
PRIMARY = ("score", "score_delta", "gpu_allocated_gib_peak", "tokens_per_s", "trainable_pct", "adapter_mb")
HELP = {
    "score": "the evaluation's score after training (higher is better)",
    "score_stderr": "the evaluation's standard error of the score (lm-eval's bootstrap/binomial stderr)",
    "score_delta": "score minus the untrained base model's score on the same tasks",
    "gpu_allocated_gib_peak": "peak memory held by tensors (torch.cuda.max_memory_allocated), GiB",
    "gpu_reserved_gib_peak": "peak memory PyTorch's caching allocator reserved, GiB",
    "gpu_nvml_used_gib_peak": "peak device memory NVML saw in use (includes the CUDA context), GiB",
    "rss_gib_peak": "peak resident host memory of the process, GiB",
    "tokens_per_s": "real (non-padding) tokens per second over the steady-state steps (warm-up left out)",
    "samples_per_s": "training examples per second over the steady-state steps",
    "step_time_median_s": "median wall time of one optimizer step",
    "mfu": "model FLOPs utilisation: 6·N·tokens/s over the GPU's peak bf16 FLOP/s",
    "trainable_pct": "trainable parameters as a % of all parameters",
    "trainable_params": "number of parameters the optimizer updates",
    "adapter_mb": "size on disk of what training saved (adapter, or the trained tensors), MB",
    "time_train_s": "wall time of trainer.train()",
    "train_loss": "training loss at the last logged step",
    "eval_loss": "loss on the held-out split after training",
}
CAPTIONS = {
    "pareto": "Pareto front, default axes (static PNG of the plot above)",
    "engines": "Engines per method on the memory-vs-speed plane (outlined: the method's Pareto front)",
    "frontier": "Speed–memory frontier per method: every configuration measured (profiles, checkpointing plans, "
                "engines), the Pareto front dashed",
    "loss_curves": "Training loss of every run (dashed: random-init weights)",
}
BARS = {"tokens_per_s": ("Throughput: real (non-padding) tokens per second over steady-state steps", False),
        "trainable_params": ("Trainable parameters (log scale)", True)}  # fmt: skip


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def num(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def row_attrs(model: str, gpu: str, method: str, engine: str, status: str, key: str = "") -> str:
    return (f'data-model="{esc(model)}" data-gpu="{esc(gpu)}" data-method="{esc(method)}" '
            f'data-engine="{esc(engine)}" data-status="{esc(status)}" data-key="{esc(key)}"')  # fmt: skip


def td(text: str, sort: Any = None, cls: str = "") -> str:
    sort = text if sort is None else sort
    return f'<td{f" class={chr(34)}{cls}{chr(34)}" if cls else ""} data-v="{esc(sort)}">{esc(text)}</td>'


def th(text: str, col: str = "", cls: str = "") -> str:
    title = f' title="{esc(HELP[col])}"' if col in HELP else ""
    return f'<th{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}{title} data-col="{esc(col or text)}">{esc(text)}</th>'


def error_cell(text: str, span: int, error: str = "") -> str:
    """A run that did not finish has no numbers: what it was, and its message, span their columns."""
    return f'<td class="err" colspan="{span}" data-v="" title="{esc(error)}">{esc(text)}</td>'


def secondary(col: str) -> str:
    return "" if col in PRIMARY else "sec"


def csv_attr(values: list[Any]) -> str:
    return esc(json.dumps([v if not (isinstance(v, float) and math.isnan(v)) else None for v in values]))


BOARD_CSV_HEAD = ["rank", "model", "gpu", "method", "label", "engine", "status", "seeds"]


def leaderboard_table(rows: list[Row], cols: list[str], facet: tuple[str, str]) -> str:
    """One model × GPU's leaderboard. Every row carries its identity (data-key) and its raw values for the CSV."""
    head = [th("rank"), th("method"), th("engine"), th("status"), th("seeds")]
    head += [th(METRICS[c][0], c, secondary(c)) for c in cols] + [th("source", "", "sec")]
    csv_head = BOARD_CSV_HEAD + [p for c in cols for p in (c, f"{c}_std")] + ["error", "run_ids", "source"]
    out = [f'<table class="sortable board" data-csv-head="{csv_attr(csv_head)}"><thead><tr>']
    out += head + ["</tr></thead><tbody>"]
    for row in (r for r in rows if r.facet == facet):
        vals = [None if c in QUALITY and not row.quality_valid else v for c in cols for v in row.values[c]]
        raw = [rank_text(row), row.model, row.gpu, row.method, row.label, row.engine, row.status, row.n, *vals,
               row.error, " ".join(row.run_ids), "; ".join(row.sources)]  # fmt: skip
        out.append(f'<tr class="st-{esc(row.status)}" {row_attrs(row.model, row.gpu, row.method, row.engine, row.status, row.key)} '
                   f'data-csv="{csv_attr(raw)}">')  # fmt: skip
        tie = "tie" if row.tied_with is not None else ""
        out.append(td(rank_text(row), row.rank if row.rank else "", tie))
        out += [td(row.label, cls="label"), td(row.engine), td(status_text(row)), td(str(row.n), row.n)]
        if row.status != "ok":
            out.append(error_cell(did_not_finish(row), len([c for c in cols if not secondary(c)]), row.error))
            out += [f'<td class="sec" data-v=""></td>' for c in cols if secondary(c)]
            out.append(td("; ".join(row.sources), cls="sec") + "</tr>")
            continue
        for col in cols:
            mean = row.values[col][0]
            hide = col in QUALITY and not row.quality_valid
            out.append(td(fmt_cell(row, col), "" if hide or math.isnan(mean) else mean, f"{secondary(col)} c-{col}".strip()))
        out.append(td("; ".join(row.sources), cls="sec") + "</tr>")
    return "".join(out) + "</tbody></table>"


def runs_table(frame, cols: list[str]) -> str:
    head = ["run id", "model", "GPU", "method", "engine", "seed", "status"] + [METRICS[c][0] for c in cols]
    out = ['<table id="runs" class="sortable"><thead><tr>']
    out += [th(h, c) for h, c in zip(head, [""] * 7 + cols)] + [th("source"), "</tr></thead><tbody>"]
    for _, run in frame.iterrows():
        out.append(f'<tr class="st-{esc(run["status"])}" '
                   f'{row_attrs(run["model"], run["gpu"], run["method"], run["engine"], run["status"])}>')  # fmt: skip
        seed = run.get("seed")
        seed = "" if seed is None or seed != seed else plain(seed)
        out += [td(run["run_id"]), td(run["model"]), td(run["gpu"]), td(run["method_label"]), td(run["engine"])]
        out += [td(seed), td(run["status"])]
        if run["status"] != "ok":
            error = str(run.get("error") or "") if run.get("error") == run.get("error") else ""
            text = (f"at {run['apart']} · " if run.get("apart") else "") + (error.strip().splitlines() or ["(no message recorded)"])[0][:300]
            out.append(error_cell(text, len(cols), error) + td(run["source"]) + "</tr>")
            continue
        for col in cols:
            value = run[col]
            text = "n/a†" if col in QUALITY and not run["quality_valid"] else fmt_number(value, col)
            out.append(td(text, "" if value != value else value))
        out.append(td(run["source"]) + "</tr>")
    return "".join(out) + "</tbody></table>"


def filter_bar(frame) -> str:
    parts = ['<label>search <input id="query" type="search" placeholder="e.g. lora fast" size="16"></label>']
    for key, label in FILTERS:
        options = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in sorted(set(frame[key].astype(str))))
        parts.append(f'<label>{esc(label)} <select data-filter="{key}"><option value="">all</option>{options}</select></label>')
    parts.append('<label><input type="checkbox" id="allcols"> all columns</label>')
    return '<div class="filters">' + "".join(parts) + ' <span id="shown"></span></div>'


def pareto_controls(cols: list[str], x: str, y: str) -> str:
    def select(axis: str, chosen: str) -> str:
        opts = "".join(
            f'<option value="{c}"{" selected" if c == chosen else ""}>{esc(METRICS[c][0])}</option>' for c in cols
        )
        return f'<label>{axis} <select id="pareto-{axis}">{opts}</select></label> ' \
               f'<label><input type="checkbox" id="pareto-log{axis}"> log</label> '  # fmt: skip

    return '<div class="filters">' + select("x", x) + select("y", y) + "</div>"


def page_data(frame, rows: list[Row], cols: list[str]) -> dict[str, Any]:
    """What the page's plots read: one point per ok leaderboard row (keyed by identity, with its own label, values,
    error bars and value texts), the bars of each bar chart, and each metric's label and direction."""
    colours = method_colours(set(frame["method"]))
    points = []
    for row in rows:
        if row.status != "ok":
            continue
        shown = [c for c in cols if not (c in QUALITY and not row.quality_valid)]
        points.append({"key": row.key, "label": row.name(several_engines(rows, row.facet)), "model": row.model,
                       "gpu": row.gpu, "method": row.method, "engine": row.engine, "status": row.status,
                       "facet": facet_title(row.facet), "colour": colours.get(row.method, "#1f77b4"), "n": row.n,
                       "values": {c: num(row.values[c][0]) for c in shown},
                       "errs": {c: error(row, c) for c in shown},
                       "texts": {c: fmt_cell(row, c) for c in shown}})  # fmt: skip
    bars = {}
    for col in BARS:
        bars[col] = [{**b, "facet": facet_title(b["facet"]), "colour": colours.get(b["method"], "#1f77b4")}
                     for b in bar_layout(rows, col)]  # fmt: skip
    metrics = {c: {"label": METRICS[c][0], "higher": METRICS[c][1]} for c in cols}
    return {"points": points, "bars": bars, "metrics": metrics, "dominated": DOMINATED,
            "barTitles": {c: t for c, (t, _) in BARS.items()}, "barLog": {c: log for c, (_, log) in BARS.items()}}  # fmt: skip


def folklore_html(frame, rows: list[Row]) -> str:
    claims = folklore(frame, rows)
    if not claims:
        return ""
    items = []
    for claim, figure, source, said in claims:
        here = "".join(f"<li>{esc(s)}</li>" for s in said)
        items.append(f"<li><b>{esc(claim)}</b> <span class='muted'>(usual figure: {esc(figure)}; source: "
                     f"{esc(source)})</span>. Here:<ul>{here}</ul></li>")  # fmt: skip
    return ("<h2>Folklore, measured</h2><p class='muted'>Common claims beside what these rows say, only the claims some "
            "row here speaks to (GB = 10⁹ bytes, as the claims count).</p><ul class='folk'>" + "".join(items) + "</ul>")  # fmt: skip


def ranked_note(rows: list[Row], facet: tuple[str, str]) -> str:
    used = next((r.ranked_by for r in rows if r.facet == facet and r.ranked_by), "")
    if not used:
        return "Not ranked: no run here has a value to rank by."
    label, higher = METRICS[used]
    return f"Ranked by {label} ({'higher' if higher else 'lower'} is better); =k: tied with rank k."


def facet_section(frame, rows: list[Row], cols: list[str], facet: tuple[str, str]) -> str:
    sub = frame[(frame["model"] == facet[0]) & (frame["gpu"] == facet[1])]
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in conditions(sub))
    summary = esc(what_wins(rows, facet)).replace("**", "")
    return (f"<section class='facet' data-facet='{esc(facet_title(facet))}'><h3>{esc(facet_title(facet))}</h3>"
            f"<p class='wins'><b>What wins here.</b> {summary}</p>"
            + f"<p class='muted'>{esc(ranked_note(rows, facet))}</p>"
            f"<div class='scroll'>{leaderboard_table(rows, cols, facet)}</div>"
            f"<details class='cond'><summary>Conditions these numbers hold under</summary><dl>{items}</dl></details>"
            "</section>")  # fmt: skip


def page_title(frame) -> str:
    folders = frame.attrs.get("folders") or list(dict.fromkeys(str(v).split(" (")[0] for v in frame["source"]))
    if len(folders) > 1:
        return f"{len(folders)} results folders merged"
    return ", ".join(dict.fromkeys(frame.get("run_name", frame["model"]).fillna("?").astype(str)))


def render(frame, rows: list[Row], recs, metric: str, note: str, images: dict[str, Path], x: str, y: str) -> str:
    cols = shown_columns(rows)
    plot_cols = [c for c in cols if c != "score_stderr"]
    x = x if x in plot_cols else (plot_cols[0] if plot_cols else x)
    y = y if y in plot_cols else (plot_cols[-1] if plot_cols else y)
    runs_csv = frame.drop(columns=["variant"]).to_csv(index=False).encode()
    data = json.dumps(page_data(frame, rows, plot_cols), allow_nan=False).replace("</", "<\\/")
    boards = "".join(facet_section(frame, rows, cols, facet) for facet in facets(frame))
    imgs = []
    for name in ("frontier", "engines", "loss_curves"):
        if name in images:
            src = data_uri(Path(images[name]).read_bytes(), "image/png")
            imgs.append(f'<figure><img alt="{esc(name)}" src="{src}"><figcaption>{esc(CAPTIONS[name])}</figcaption></figure>')
    missing = [n for n in ("pareto", "throughput", "trainable_params", "loss_curves") if n not in images]
    static_pareto = ""
    if "pareto" in images:
        src = data_uri(Path(images["pareto"]).read_bytes(), "image/png")
        static_pareto = f'<details><summary>static PNG of the default axes</summary><img alt="pareto" src="{src}"></details>'
    random_note = ""
    if (~frame["quality_valid"]).any():
        random_note = "<p>† random-init weights: score and losses measure nothing about quality, so they are left out.</p>"
    bar_svgs = "".join(f'<figure><svg class="bars" id="bars-{c}" width="100%" role="img" aria-label="{esc(t)}"></svg>'
                       f"<figcaption>{esc(t)}</figcaption></figure>" for c, (t, _) in BARS.items())  # fmt: skip
    return TEMPLATE.format(
        title=esc(f"peftbench leaderboard — {page_title(frame)}"),
        n_runs=len(frame),
        sources=esc(sources_text(frame).replace("`", "")),
        ranking=esc(ranking_text(metric, note)),
        tie_note=esc(TIE_NOTE),
        random_note=random_note,
        filters=filter_bar(frame),
        runs_csv=data_uri(runs_csv, "text/csv"),
        boards=boards,
        folklore=folklore_html(frame, rows),
        runs=runs_table(frame, cols),
        pareto_controls=pareto_controls(plot_cols, x, y),
        static_pareto=static_pareto,
        bars=bar_svgs,
        plots="".join(imgs),
        missing=esc(f"No data for: {', '.join(missing)}." if missing else ""),
        data=data,
        css=CSS,
        js=JS,
    )


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:20px;color:#222;max-width:1360px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:18px 0 4px}
.cond dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:4px 0;font-size:12.5px}
.cond dt{font-weight:600;color:#555} .cond dd{margin:0} .cond summary{cursor:pointer;color:#555;font-size:13px}
.wins{margin:4px 0 6px;max-width:1100px}
.filters{margin:8px 0;display:flex;gap:14px;flex-wrap:wrap;align-items:center}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border-bottom:1px solid #e3e3e3;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f4f4f4;cursor:pointer;position:sticky;top:0;user-select:none}
th[title]{text-decoration:underline dotted #999}
th.asc::after{content:" ▲"} th.desc::after{content:" ▼"}
table.board td:nth-child(-n+5),table.board th:nth-child(-n+5){text-align:left}
#runs td:nth-child(-n+7),#runs th:nth-child(-n+7){text-align:left} tr:hover td{background:#f7fbff}
td.tie{color:#8a5a00;font-weight:600} td.label{font-weight:500}
tr.st-oom td,tr.st-failed td{background:#fdecea} tr.st-invalid td,tr.st-skipped td{background:#fff6e0}
td.err{text-align:left;color:#a33;white-space:normal;max-width:720px}
.sec{display:none} body.allcols .sec{display:table-cell}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:12px;align-items:start}
figure{margin:10px 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:12px;color:#666}
.scroll{overflow-x:auto}
#pareto,svg.bars{border:1px solid #eee;background:#fff} .muted{color:#777} ul.folk li{margin:4px 0}
"""

JS = r"""
(function(){
const DATA=JSON.parse(document.getElementById('data').textContent);
const SVGNS='http://www.w3.org/2000/svg';
const filters=[...document.querySelectorAll('select[data-filter]')];
const query=document.getElementById('query');
function words(){return query.value.toLowerCase().split(/\s+/).filter(w=>w);}
function matches(text){const t=text.toLowerCase();return words().every(w=>t.includes(w));}
function visible(o){return filters.every(s=>!s.value||String(o[s.dataset.filter])===s.value)&&matches([o.label,o.method,o.engine,o.model,o.gpu,o.name||''].join(' '));}
function csvCell(v){if(v===null||v===undefined)return '';const t=String(v);return /[",\n]/.test(t)?'"'+t.replace(/"/g,'""')+'"':t;}
// The leaderboard CSV holds the rows the filters and the search leave shown, nothing else.
function shownCsv(){
  const boards=[...document.querySelectorAll('table.board')];if(!boards.length)return '';
  const lines=[JSON.parse(boards[0].dataset.csvHead).map(csvCell).join(',')];
  boards.forEach(t=>[...t.tBodies[0].rows].forEach(tr=>{if(tr.style.display!=='none')lines.push(JSON.parse(tr.dataset.csv).map(csvCell).join(','));}));
  return lines.join('\n')+'\n';
}
function applyFilters(){
  let shown=0,total=0;
  document.querySelectorAll('table.sortable tbody tr').forEach(tr=>{
    const ok=filters.every(s=>!s.value||tr.dataset[s.dataset.filter]===s.value)&&matches(tr.textContent);
    tr.style.display=ok?'':'none';
    if(tr.closest('table').id==='runs'){total++;if(ok)shown++;}
  });
  document.querySelectorAll('section.facet').forEach(sec=>{
    sec.style.display=[...sec.querySelectorAll('tbody tr')].some(tr=>tr.style.display!=='none')?'':'none';});
  document.getElementById('shown').textContent=shown+' of '+total+' runs shown';
  document.documentElement.dataset.csvRows=shownCsv().trim().split('\n').length-1;
  drawPareto();drawBars();
}
filters.forEach(s=>s.addEventListener('change',applyFilters));
query.addEventListener('input',applyFilters);
document.getElementById('allcols').addEventListener('change',e=>document.body.classList.toggle('allcols',e.target.checked));
document.getElementById('csv-shown').addEventListener('click',e=>{
  const blob=new Blob([shownCsv()],{type:'text/csv'});e.target.href=URL.createObjectURL(blob);});
// Sorting: click a header; numbers by value, blanks last either way.
document.querySelectorAll('table.sortable').forEach(table=>{
  table.querySelectorAll('th').forEach((th,i)=>th.addEventListener('click',()=>{
    const dir=th.classList.contains('asc')?-1:1;
    table.querySelectorAll('th').forEach(h=>h.classList.remove('asc','desc'));
    th.classList.add(dir>0?'asc':'desc');
    const body=table.tBodies[0];
    const key=tr=>{let col=0;for(const c of tr.children){if(col===i)return c.colSpan===1?c.dataset.v:'';col+=c.colSpan;}return '';};
    [...body.rows].sort((a,b)=>{
      const x=key(a),y=key(b);
      if(x===''&&y==='')return 0; if(x==='')return 1; if(y==='')return -1;
      const nx=Number(x),ny=Number(y);
      const c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);
      return dir*c;
    }).forEach(tr=>body.appendChild(tr));
  }));
});
function el(name,attrs,parent,text){
  const e=document.createElementNS(SVGNS,name);
  for(const k in attrs)e.setAttribute(k,attrs[k]);
  if(text!==undefined)e.textContent=text;
  if(parent)parent.appendChild(e);return e;
}
function ticks(lo,hi,log){
  if(log){const out=[];for(let p=Math.floor(Math.log10(lo));p<=Math.ceil(Math.log10(hi));p++)out.push(Math.pow(10,p));return out;}
  const span=hi-lo||Math.abs(hi)||1,step0=span/5,mag=Math.pow(10,Math.floor(Math.log10(step0)));
  const step=[1,2,5,10].map(m=>m*mag).find(s=>span/s<=6);
  const out=[];for(let v=Math.ceil(lo/step)*step;v<=hi+step*1e-9;v+=step)out.push(+v.toPrecision(12));return out;
}
function fmt(v){
  const a=Math.abs(v);
  if(a>=1e9)return (v/1e9).toPrecision(3)+' B';if(a>=1e6)return (v/1e6).toPrecision(3)+' M';
  if(a>=1000)return Math.round(v).toLocaleString('en-US');
  return a<1e-3&&v!==0?v.toExponential(1):String(+v.toPrecision(3));
}
function front(pts,hx,hy){
  const sx=hx?1:-1,sy=hy?1:-1;
  return pts.map((p,i)=>!pts.some((o,j)=>j!==i&&sx*o.x>=sx*p.x&&sy*o.y>=sy*p.y&&(sx*o.x>sx*p.x||sy*o.y>sy*p.y)));
}
const SHAPES=['circle','square','triangle','diamond'],DASHES=['5 3','1 3','9 3 2 3','2 2'];
function marker(g,shape,x,y,r,attrs){
  if(shape==='circle')return el('circle',Object.assign({cx:x,cy:y,r:r},attrs),g);
  const pts=shape==='square'?[[-r,-r],[r,-r],[r,r],[-r,r]]:shape==='triangle'?[[0,-r*1.2],[r*1.1,r],[-r*1.1,r]]:[[0,-r*1.3],[r*1.3,0],[0,r*1.3],[-r*1.3,0]];
  return el('polygon',Object.assign({points:pts.map(p=>(x+p[0])+','+(y+p[1])).join(' ')},attrs),g);
}
// Labels placed from the top down: one that would overlap an earlier one moves down a line, so none overlaps.
function placeLabel(placed,x,y,w){let dy=-6;while(placed.some(o=>Math.abs(o[0]-x)<Math.max(w,o[2])&&Math.abs(o[1]-(y+dy))<12))dy+=12;placed.push([x,y+dy,w]);return y+dy;}
function drawPareto(){
  const svg=document.getElementById('pareto');while(svg.firstChild)svg.removeChild(svg.firstChild);
  const xk=document.getElementById('pareto-x').value,yk=document.getElementById('pareto-y').value;
  const lx=document.getElementById('pareto-logx').checked,ly=document.getElementById('pareto-logy').checked;
  const mx=DATA.metrics[xk],my=DATA.metrics[yk];
  const groupsAll=[...new Set(DATA.points.map(p=>p.facet))];
  const W=1000,L=70,R=190,T=20,B=50+(groupsAll.length>1?18*groupsAll.length:0),H=440+B;svg.setAttribute('viewBox','0 0 '+W+' '+H);
  const pts=DATA.points.filter(p=>visible(p)).map(p=>({p:p,x:p.values[xk],y:p.values[yk],ex:p.errs[xk]||0,ey:p.errs[yk]||0}))
    .filter(q=>q.x!=null&&q.y!=null&&(!lx||q.x>0)&&(!ly||q.y>0));
  svg.dataset.points=pts.length;
  if(!pts.length){el('text',{x:W/2,y:H/2,'text-anchor':'middle',fill:'#777'},svg,'No run has both '+mx.label+' and '+my.label+' (with the filters set).');return;}
  const tx=v=>lx?Math.log10(v):v,ty=v=>ly?Math.log10(v):v;
  let x0=Math.min(...pts.map(q=>q.x-q.ex)),x1=Math.max(...pts.map(q=>q.x+q.ex)),y0=Math.min(...pts.map(q=>q.y-q.ey)),y1=Math.max(...pts.map(q=>q.y+q.ey));
  if(lx)x0=Math.min(...pts.map(q=>q.x));if(ly)y0=Math.min(...pts.map(q=>q.y));
  const pad=(a,b,log)=>{if(log)return[a/1.5,b*1.5];const d=(b-a)||Math.abs(a)*0.1||1;return[a-d*0.08,b+d*0.08];};
  [x0,x1]=pad(x0,x1,lx);[y0,y1]=pad(y0,y1,ly);
  const sx=v=>L+(tx(Math.max(v,lx?x0:-Infinity))-tx(x0))/(tx(x1)-tx(x0))*(W-L-R),sy=v=>H-B-(ty(Math.max(v,ly?y0:-Infinity))-ty(y0))/(ty(y1)-ty(y0))*(H-T-B);
  const axes=el('g',{'font-size':11,fill:'#444'},svg);
  ticks(x0,x1,lx).filter(v=>v>=x0&&v<=x1).forEach(v=>{el('line',{x1:sx(v),x2:sx(v),y1:T,y2:H-B,stroke:'#eee'},axes);el('text',{x:sx(v),y:H-B+15,'text-anchor':'middle'},axes,fmt(v));});
  ticks(y0,y1,ly).filter(v=>v>=y0&&v<=y1).forEach(v=>{el('line',{x1:L,x2:W-R,y1:sy(v),y2:sy(v),stroke:'#eee'},axes);el('text',{x:L-6,y:sy(v)+4,'text-anchor':'end'},axes,fmt(v));});
  el('rect',{x:L,y:T,width:W-L-R,height:H-T-B,fill:'none',stroke:'#999'},axes);
  el('text',{x:(L+W-R)/2,y:H-B+36,'text-anchor':'middle','font-size':12},axes,mx.label+(mx.higher?' (higher is better)':' (lower is better)')+(lx?', log':''));
  el('text',{x:14,y:(T+H-B)/2,'text-anchor':'middle','font-size':12,transform:'rotate(-90 14 '+(T+H-B)/2+')'},axes,my.label+(my.higher?' (higher is better)':' (lower is better)')+(ly?', log':''));
  const groups=[...new Set(pts.map(q=>q.p.facet))];
  const legend=el('g',{'font-size':11},svg);
  const placed=[];
  groups.forEach((f,gi)=>{
    const shape=SHAPES[gi%SHAPES.length],qs=pts.filter(q=>q.p.facet===f),onFront=front(qs,mx.higher,my.higher);
    const line=qs.filter((q,i)=>onFront[i]).sort((a,b)=>a.x-b.x);
    el('polyline',{points:line.map(q=>sx(q.x)+','+sy(q.y)).join(' '),fill:'none',stroke:'#333','stroke-dasharray':DASHES[gi%DASHES.length],'stroke-width':1.2},svg);
    qs.map((q,i)=>[q,i]).sort((a,b)=>sy(a[0].y)-sy(b[0].y)).forEach(([q,i])=>{
      const g=el('g',{class:'point '+(onFront[i]?'front':'dominated'),'data-key':q.p.key},svg);
      const c=onFront[i]?q.p.colour:DATA.dominated;
      if(q.ex)el('line',{class:'xerr',x1:sx(q.x-q.ex),x2:sx(q.x+q.ex),y1:sy(q.y),y2:sy(q.y),stroke:c},g);
      if(q.ey)el('line',{class:'yerr',x1:sx(q.x),x2:sx(q.x),y1:sy(q.y-q.ey),y2:sy(q.y+q.ey),stroke:c},g);
      marker(g,shape,sx(q.x),sy(q.y),6,{fill:c,stroke:onFront[i]?'#000':'none'});
      const w=q.p.label.length*6.2+10,ly2=placeLabel(placed,sx(q.x)+8,sy(q.y),w);
      el('text',{class:'label',x:sx(q.x)+8,y:ly2,'font-size':11,fill:onFront[i]?'#000':'#888'},g,q.p.label);
      el('title',{},g,q.p.label+' ('+q.p.facet+', '+q.p.n+' seed'+(q.p.n>1?'s':'')+')\n'+mx.label+': '+(q.p.texts[xk]||fmt(q.x))+'\n'+my.label+': '+(q.p.texts[yk]||fmt(q.y))+(onFront[i]?'\non the front':'\ndominated'));
    });
    if(groups.length>1){const ly=H-B+54+gi*18;marker(legend,shape,L+8,ly-4,5,{fill:'#555'});
      el('line',{x1:L+20,x2:L+60,y1:ly-4,y2:ly-4,stroke:'#333','stroke-dasharray':DASHES[gi%DASHES.length]},legend);
      el('text',{x:L+68,y:ly},legend,f+': front');}
  });
  el('text',{x:W-R+12,y:H-B-18,'font-size':11,fill:'#777'},legend,'grey: dominated');
  el('text',{x:W-R+12,y:H-B-4,'font-size':11,fill:'#777'},legend,'bars: ±1 stderr or std');
}
// Bar charts: each bar is one leaderboard row (data-key), its name and its value text drawn from that row's entry.
function drawBars(){
  Object.keys(DATA.bars).forEach(col=>{
    const svg=document.getElementById('bars-'+col);if(!svg)return;while(svg.firstChild)svg.removeChild(svg.firstChild);
    const bars=DATA.bars[col].filter(b=>visible(b)),log=DATA.barLog[col];
    const L=Math.min(420,Math.max(120,...bars.map(b=>b.name.length*6.3+12))),W=Math.max(640,L+380),R=90,row=20,head=22;
    const facetsB=[...new Set(bars.map(b=>b.facet))];
    let y=6;const H=facetsB.reduce((h,f)=>h+head+row*bars.filter(b=>b.facet===f).length+10,6);
    svg.setAttribute('viewBox','0 0 '+W+' '+Math.max(H,40));
    if(!bars.length){el('text',{x:W/2,y:24,'text-anchor':'middle',fill:'#777'},svg,'No run (with the filters set).');return;}
    facetsB.forEach(f=>{
      el('text',{x:4,y:y+14,'font-size':12,'font-weight':600},svg,f);y+=head;
      const mine=bars.filter(b=>b.facet===f).sort((a,b)=>b.pos-a.pos),hi=Math.max(...mine.map(b=>b.value+b.err));
      const lo=log?Math.min(...mine.map(b=>b.value))/2:0,tv=v=>log?Math.log10(v):v,sx=v=>(tv(v)-tv(lo||1e-12))/(tv(hi)-tv(lo||1e-12))*(W-L-R);
      mine.forEach(b=>{
        const g=el('g',{class:'bar','data-key':b.key},svg),w=Math.max(1,log?sx(b.value):b.value/hi*(W-L-R));
        el('text',{class:'name',x:L-6,y:y+row/2+4,'text-anchor':'end','font-size':11},g,b.name);
        el('rect',{x:L,y:y+3,width:w,height:row-6,fill:b.colour},g);
        el('text',{class:'value',x:L+w+4,y:y+row/2+4,'font-size':11},g,b.text);
        el('title',{},g,b.name+': '+b.text);
        y+=row;
      });
      y+=10;
    });
  });
}
['pareto-x','pareto-y','pareto-logx','pareto-logy'].forEach(id=>document.getElementById(id).addEventListener('change',drawPareto));
// A link can carry the view: report.html#gpu=...&method=...&q=fast&x=rss_gib_peak&y=score&logx=1&sort=-tokens/s&cols=all
const params=new URLSearchParams(location.hash.slice(1));
filters.forEach(s=>{if(params.has(s.dataset.filter))s.value=params.get(s.dataset.filter);});
if(params.has('q'))query.value=params.get('q');
if(params.get('cols')==='all'){document.getElementById('allcols').checked=true;document.body.classList.add('allcols');}
['x','y'].forEach(a=>{
  if(params.has(a))document.getElementById('pareto-'+a).value=params.get(a);
  if(params.get('log'+a)==='1')document.getElementById('pareto-log'+a).checked=true;
});
applyFilters();
if(params.has('sort')){
  const want=params.get('sort'),desc=want.startsWith('-'),label=desc?want.slice(1):want;
  document.querySelectorAll('table.sortable th').forEach(th=>{
    if(th.textContent===label){th.click();if(desc)th.click();}
  });
}
// Marker for headless checks and the screenshot script: every <img> decoded, the SVG drawn, the page height.
function ready(){
  const imgs=[...document.images],loaded=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;
  const root=document.documentElement;
  root.dataset.imagesLoaded=loaded+'/'+imgs.length;
  root.dataset.paretoPoints=document.getElementById('pareto').dataset.points||'0';
  root.dataset.pageHeight=Math.ceil(document.documentElement.scrollHeight);
  root.dataset.pageWidth=Math.ceil(document.documentElement.scrollWidth);
  root.dataset.ready=loaded===imgs.length?'1':'0';
}
if(document.readyState==='complete')ready();else window.addEventListener('load',ready);
})();
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{css}</style></head>
<body>
<h1>{title}</h1>
<p>{n_runs} runs from {sources}; {ranking}. Several seeds of one point: mean ± std (sample std). {tie_note}
Runs that did not finish ok are listed with their status, the options that set them apart and their error, never
dropped. Click a column header to sort; hover one for what it measures.</p>
{random_note}
<h2>Leaderboard</h2>
{filters}
<p>Download: <a id="csv-shown" download="peftbench-leaderboard.csv" href="#">leaderboard rows shown (CSV)</a> ·
<a download="peftbench-runs.csv" href="{runs_csv}">every run (CSV)</a></p>
{boards}
<h2>Pareto front</h2>
<p class="muted">Pick any two metrics; per model and GPU, the points no other point beats on both are joined by the
dashed line, the dominated ones are grey; bars are ±1 standard error (score) or ±1 std over seeds. Follows the
filters above.</p>
{pareto_controls}
<svg id="pareto" width="100%" role="img" aria-label="Pareto plot"></svg>
{static_pareto}
<h2>Plots</h2>
<p class="muted">{missing}</p>
<div class="plots">{bars}{plots}</div>
{folklore}
<h2>All runs</h2>
<div class="scroll">{runs}</div>
<script type="application/json" id="data">{data}</script>
<script>{js}</script>
</body></html>
"""
