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
