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

from peftbench.report import METRICS, QUALITY, Row, conditions, facet_title, facets, fmt_cell, fmt_number, shown_columns
from peftbench.report import ranking_text, status_text
from peftbench.report_plots import DOMINATED, method_colours

FILTERS = (("model", "model"), ("gpu", "GPU"), ("method", "method"), ("engine", "engine"), ("status", "status"))
CAPTIONS = {
    "pareto": "Pareto front, default axes (static PNG of the plot above)",
    "engines": "Engines per method on the memory-vs-speed plane (outlined: the method's Pareto front)",
    "throughput": "Throughput: real (non-padding) tokens per second over steady-state steps",
    "trainable_params": "Trainable parameters (log scale)",
    "loss_curves": "Training loss of every run (dashed: random-init weights)",
}


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def num(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def row_attrs(model: str, gpu: str, method: str, engine: str, status: str) -> str:
    return (f'data-model="{esc(model)}" data-gpu="{esc(gpu)}" data-method="{esc(method)}" '
            f'data-engine="{esc(engine)}" data-status="{esc(status)}"')  # fmt: skip


def td(text: str, sort: Any = None) -> str:
    sort = text if sort is None else sort
    return f'<td data-v="{esc(sort)}">{esc(text)}</td>'


def error_cell(error: str, span: int) -> str:
    """A run that did not finish has no numbers: its message spans their columns, read next to its status."""
    text = error.splitlines()[0][:300] if error else "(no message recorded)"
    return f'<td class="err" colspan="{span}" data-v="" title="{esc(error)}">{esc(text)}</td>'


def leaderboard_table(rows: list[Row], cols: list[str]) -> str:
    head = ["rank", "model", "GPU", "method", "engine", "status", "seeds"] + [METRICS[c][0] for c in cols] + ["error"]
    out = ['<table id="leaderboard" class="sortable"><thead><tr>']
    out += [f"<th>{esc(h)}</th>" for h in head] + ["</tr></thead><tbody>"]
    for row in rows:
        base = row.method.split(" (")[0]
        out.append(f'<tr class="st-{esc(row.status)}" {row_attrs(row.model, row.gpu, base, row.engine, row.status)}>')
        out.append(td(str(row.rank or ""), row.rank if row.rank else ""))
        out += [td(row.model), td(row.gpu), td(row.method), td(row.engine), td(status_text(row)), td(str(row.n), row.n)]
        if row.status != "ok":
            out.append(error_cell(row.error, len(cols) + 1) + "</tr>")
            continue
        for col in cols:
            mean = row.values[col][0]
            hide = col in QUALITY and not row.quality_valid
            out.append(td(fmt_cell(row, col), "" if hide or math.isnan(mean) else mean))
        out.append('<td data-v=""></td></tr>')
    return "".join(out) + "</tbody></table>"


def runs_table(frame, cols: list[str]) -> str:
    head = ["run id", "model", "GPU", "method", "engine", "seed", "status"] + [METRICS[c][0] for c in cols] + ["error"]
    out = ['<table id="runs" class="sortable"><thead><tr>']
    out += [f"<th>{esc(h)}</th>" for h in head] + ["</tr></thead><tbody>"]
    for _, run in frame.iterrows():
        out.append(f'<tr class="st-{esc(run["status"])}" '
                   f'{row_attrs(run["model"], run["gpu"], run["method"], run["engine"], run["status"])}>')  # fmt: skip
        seed = run.get("seed")
        seed = "" if seed is None or seed != seed else str(seed)
        out += [td(run["run_id"]), td(run["model"]), td(run["gpu"]), td(run["method_label"]), td(run["engine"])]
        out += [td(seed), td(run["status"])]
        if run["status"] != "ok":
            error = str(run.get("error") or "") if run.get("error") == run.get("error") else ""
            out.append(error_cell(error, len(cols) + 1) + "</tr>")
            continue
        for col in cols:
            value = run[col]
            text = "n/a†" if col in QUALITY and not run["quality_valid"] else fmt_number(value, col)
            out.append(td(text, "" if value != value else value))
        out.append('<td data-v=""></td></tr>')
    return "".join(out) + "</tbody></table>"


def filter_bar(frame) -> str:
    parts = []
    for key, label in FILTERS:
        options = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in sorted(set(frame[key].astype(str))))
        parts.append(f'<label>{esc(label)} <select data-filter="{key}"><option value="">all</option>{options}</select></label>')
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
    """What the Pareto plot's JS reads: one point per ok leaderboard row, and each metric's label and direction."""
    colours = method_colours(set(frame["method"]))
    points = []
    for row in rows:
        if row.status != "ok":
            continue
        base = row.method.split(" (")[0]
        values = {c: num(row.values[c][0]) for c in cols if not (c in QUALITY and not row.quality_valid)}
        points.append({"label": row.method, "model": row.model, "gpu": row.gpu, "method": base, "engine": row.engine,
                       "status": row.status, "facet": facet_title(row.facet), "colour": colours.get(base, "#1f77b4"),
                       "n": row.n, "values": values})  # fmt: skip
    metrics = {c: {"label": METRICS[c][0], "higher": METRICS[c][1]} for c in cols}
    return {"points": points, "metrics": metrics, "dominated": DOMINATED}


def leaderboard_csv(rows: list[Row], cols: list[str]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["rank", "model", "gpu", "method", "engine", "status", "seeds"]
                    + [p for c in cols for p in (c, f"{c}_std")] + ["error", "run_ids"])  # fmt: skip
    for r in rows:
        vals = [num(v) for c in cols for v in r.values[c]]
        if not r.quality_valid:
            vals = [None if c in QUALITY else v for c, v in zip([c for c in cols for _ in (0, 1)], vals)]
        writer.writerow([r.rank or "", r.model, r.gpu, r.method, r.engine, r.status, r.n, *vals, r.error,
                         " ".join(r.run_ids)])  # fmt: skip
    return buf.getvalue()


def render(frame, rows: list[Row], recs, metric: str, note: str, images: dict[str, Path], x: str, y: str) -> str:
    cols = shown_columns(rows)
    plot_cols = [c for c in cols if c != "score_stderr"]
    x = x if x in plot_cols else (plot_cols[0] if plot_cols else x)
    y = y if y in plot_cols else (plot_cols[-1] if plot_cols else y)
    runs_csv = frame.drop(columns=["variant"]).to_csv(index=False).encode()
    data = json.dumps(page_data(frame, rows, plot_cols), allow_nan=False).replace("</", "<\\/")
    conds = []
    for facet in facets(frame):
        sub = frame[(frame["model"] == facet[0]) & (frame["gpu"] == facet[1])]
        items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in conditions(sub))
        conds.append(f"<section class='cond'><h3>{esc(facet_title(facet))}</h3><dl>{items}</dl></section>")
    imgs = []
    for name in ("engines", "throughput", "trainable_params", "loss_curves"):
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
    return TEMPLATE.format(
        title=esc(f"peftbench leaderboard — {', '.join(dict.fromkeys(frame.get('run_name', frame['model']).astype(str)))}"),
        n_runs=len(frame),
        ranking=esc(ranking_text(metric, note)),
        random_note=random_note,
        conditions="".join(conds),
        filters=filter_bar(frame),
        runs_csv=data_uri(runs_csv, "text/csv"),
        board_csv=data_uri(leaderboard_csv(rows, cols).encode(), "text/csv"),
        leaderboard=leaderboard_table(rows, cols),
        runs=runs_table(frame, cols),
        pareto_controls=pareto_controls(plot_cols, x, y),
        static_pareto=static_pareto,
        plots="".join(imgs),
        missing=esc(f"No data for: {', '.join(missing)}." if missing else ""),
        data=data,
        css=CSS,
        js=JS,
    )


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:8px 0 4px}
.cond dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0;font-size:13px}
.cond dt{font-weight:600;color:#555} .cond dd{margin:0}
.filters{margin:8px 0;display:flex;gap:14px;flex-wrap:wrap;align-items:center}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0;width:100%}
th,td{border-bottom:1px solid #e3e3e3;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f4f4f4;cursor:pointer;position:sticky;top:0;user-select:none}
th.asc::after{content:" ▲"} th.desc::after{content:" ▼"}
td:nth-child(-n+7),th:nth-child(-n+7){text-align:left} tr:hover td{background:#f7fbff}
tr.st-oom td,tr.st-failed td{background:#fdecea} tr.st-invalid td,tr.st-skipped td{background:#fff6e0}
td.err{text-align:left;color:#a33;white-space:normal}
  .plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:12px;align-items:start}
figure{margin:10px 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:12px;color:#666}
  .scroll{overflow-x:auto}
#pareto{border:1px solid #eee;background:#fff} .muted{color:#777}
"""

JS = r"""
(function(){
const DATA=JSON.parse(document.getElementById('data').textContent);
const SVGNS='http://www.w3.org/2000/svg';
const filters=[...document.querySelectorAll('select[data-filter]')];
function visible(o){return filters.every(s=>!s.value||String(o[s.dataset.filter])===s.value);}
function applyFilters(){
  let shown=0,total=0;
  document.querySelectorAll('table.sortable tbody tr').forEach(tr=>{
    const ok=filters.every(s=>!s.value||tr.dataset[s.dataset.filter]===s.value);
    tr.style.display=ok?'':'none';
    if(tr.closest('table').id==='runs'){total++;if(ok)shown++;}
  });
  document.getElementById('shown').textContent=shown+' of '+total+' runs shown';
  drawPareto();
}
filters.forEach(s=>s.addEventListener('change',applyFilters));
// Sorting: click a header; numbers by value, blanks last either way.
document.querySelectorAll('table.sortable').forEach(table=>{
  table.querySelectorAll('th').forEach((th,i)=>th.addEventListener('click',()=>{
    const dir=th.classList.contains('asc')?-1:1;
    table.querySelectorAll('th').forEach(h=>h.classList.remove('asc','desc'));
    th.classList.add(dir>0?'asc':'desc');
    const body=table.tBodies[0];
    const key=tr=>{const c=tr.children[i];return c&&c.colSpan===1?c.dataset.v:'';};  // a failed run's spanning error cell: blank
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
function fmt(v){return Math.abs(v)>=1e4||(Math.abs(v)<1e-2&&v!==0)?v.toExponential(1):String(+v.toPrecision(3));}
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
function drawPareto(){
  const svg=document.getElementById('pareto');while(svg.firstChild)svg.removeChild(svg.firstChild);
  const xk=document.getElementById('pareto-x').value,yk=document.getElementById('pareto-y').value;
  const lx=document.getElementById('pareto-logx').checked,ly=document.getElementById('pareto-logy').checked;
  const mx=DATA.metrics[xk],my=DATA.metrics[yk];
  const groupsAll=[...new Set(DATA.points.map(p=>p.facet))];
  const W=900,L=70,R=110,T=20,B=50+(groupsAll.length>1?18*groupsAll.length:0),H=420+B;svg.setAttribute('viewBox','0 0 '+W+' '+H);
  const pts=DATA.points.filter(p=>visible(p)).map(p=>({p:p,x:p.values[xk],y:p.values[yk]}))
    .filter(q=>q.x!=null&&q.y!=null&&(!lx||q.x>0)&&(!ly||q.y>0));
  svg.dataset.points=pts.length;
  if(!pts.length){el('text',{x:W/2,y:H/2,'text-anchor':'middle',fill:'#777'},svg,'No run has both '+mx.label+' and '+my.label+' (with the filters set).');return;}
  const tx=v=>lx?Math.log10(v):v,ty=v=>ly?Math.log10(v):v;
  let x0=Math.min(...pts.map(q=>q.x)),x1=Math.max(...pts.map(q=>q.x)),y0=Math.min(...pts.map(q=>q.y)),y1=Math.max(...pts.map(q=>q.y));
  const pad=(a,b,log)=>{if(log)return[a/1.5,b*1.5];const d=(b-a)||Math.abs(a)*0.1||1;return[a-d*0.08,b+d*0.08];};
  [x0,x1]=pad(x0,x1,lx);[y0,y1]=pad(y0,y1,ly);
  const sx=v=>L+(tx(v)-tx(x0))/(tx(x1)-tx(x0))*(W-L-R),sy=v=>H-B-(ty(v)-ty(y0))/(ty(y1)-ty(y0))*(H-T-B);
  const axes=el('g',{'font-size':11,fill:'#444'},svg);
  ticks(x0,x1,lx).filter(v=>v>=x0&&v<=x1).forEach(v=>{el('line',{x1:sx(v),x2:sx(v),y1:T,y2:H-B,stroke:'#eee'},axes);el('text',{x:sx(v),y:H-B+15,'text-anchor':'middle'},axes,fmt(v));});
  ticks(y0,y1,ly).filter(v=>v>=y0&&v<=y1).forEach(v=>{el('line',{x1:L,x2:W-R,y1:sy(v),y2:sy(v),stroke:'#eee'},axes);el('text',{x:L-6,y:sy(v)+4,'text-anchor':'end'},axes,fmt(v));});
  el('rect',{x:L,y:T,width:W-L-R,height:H-T-B,fill:'none',stroke:'#999'},axes);
  el('text',{x:(L+W-R)/2,y:H-B+36,'text-anchor':'middle','font-size':12},axes,mx.label+(mx.higher?' (higher is better)':' (lower is better)')+(lx?', log':''));
  el('text',{x:14,y:(T+H-B)/2,'text-anchor':'middle','font-size':12,transform:'rotate(-90 14 '+(T+H-B)/2+')'},axes,my.label+(my.higher?' (higher is better)':' (lower is better)')+(ly?', log':''));
  const groups=[...new Set(pts.map(q=>q.p.facet))];
  const legend=el('g',{'font-size':11},svg);
  groups.forEach((f,gi)=>{
    const shape=SHAPES[gi%SHAPES.length],qs=pts.filter(q=>q.p.facet===f),onFront=front(qs,mx.higher,my.higher);
    const line=qs.filter((q,i)=>onFront[i]).sort((a,b)=>a.x-b.x);
    el('polyline',{points:line.map(q=>sx(q.x)+','+sy(q.y)).join(' '),fill:'none',stroke:'#333','stroke-dasharray':DASHES[gi%DASHES.length],'stroke-width':1.2},svg);
    qs.forEach((q,i)=>{
      const g=el('g',{class:onFront[i]?'front':'dominated'},svg);
      marker(g,shape,sx(q.x),sy(q.y),6,{fill:onFront[i]?q.p.colour:DATA.dominated,stroke:onFront[i]?'#000':'none'});
      el('text',{x:sx(q.x)+8,y:sy(q.y)-6,'font-size':11,fill:onFront[i]?'#000':'#999'},g,q.p.label);
      el('title',{},g,q.p.label+' ('+q.p.facet+', '+q.p.n+' seed'+(q.p.n>1?'s':'')+')\n'+mx.label+': '+fmt(q.x)+'\n'+my.label+': '+fmt(q.y)+(onFront[i]?'\non the front':'\ndominated'));
    });
    if(groups.length>1){const ly=H-B+54+gi*18;marker(legend,shape,L+8,ly-4,5,{fill:'#555'});
      el('line',{x1:L+20,x2:L+60,y1:ly-4,y2:ly-4,stroke:'#333','stroke-dasharray':DASHES[gi%DASHES.length]},legend);
      el('text',{x:L+68,y:ly},legend,f+': front');}
  });
  el('text',{x:W-R+12,y:H-B-4,'font-size':11,fill:'#777'},legend,'grey: dominated');
}
['pareto-x','pareto-y','pareto-logx','pareto-logy'].forEach(id=>document.getElementById(id).addEventListener('change',drawPareto));
// A link can carry the view: report.html#gpu=...&method=...&x=rss_gib_peak&y=score&logx=1&sort=-tokens/s
const params=new URLSearchParams(location.hash.slice(1));
filters.forEach(s=>{if(params.has(s.dataset.filter))s.value=params.get(s.dataset.filter);});
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
// The load event waits for every <img> (data URIs included) to load or fail; a broken one has naturalWidth 0.
function ready(){
  const imgs=[...document.images],loaded=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;
  const root=document.documentElement;
  root.dataset.imagesLoaded=loaded+'/'+imgs.length;
  root.dataset.paretoPoints=document.getElementById('pareto').dataset.points||'0';
  root.dataset.pageHeight=Math.ceil(document.documentElement.scrollHeight);
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
<p>{n_runs} runs; {ranking}. Several seeds of one point: mean ± std (sample std). Runs that did not finish ok are
listed with their status and error, never dropped. Click a column header to sort.</p>
{random_note}
<h2>Conditions</h2>
{conditions}
<h2>Leaderboard</h2>
{filters}
<p>Download: <a download="peftbench-runs.csv" href="{runs_csv}">all runs (CSV)</a> ·
<a download="peftbench-leaderboard.csv" href="{board_csv}">leaderboard (CSV)</a></p>
<div class="scroll">{leaderboard}</div>
<h2>Pareto front</h2>
<p class="muted">Pick any two metrics; per model and GPU, the points no other point beats on both are joined by the
dashed line, the dominated ones are grey. Follows the filters above.</p>
{pareto_controls}
<svg id="pareto" width="100%" role="img" aria-label="Pareto plot"></svg>
{static_pareto}
<h2>Plots</h2>
<p class="muted">{missing}</p>
<div class="plots">{plots}</div>
<h2>All runs</h2>
<div class="scroll">{runs}</div>
<script type="application/json" id="data">{data}</script>
<script>{js}</script>
</body></html>
"""
