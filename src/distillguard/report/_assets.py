"""The report's stylesheet and its one script (table sorting and filtering), inlined into the page."""

CSS = """
:root{--fg:#1d2430;--mut:#5f6b7a;--bd:#e2e5ea;--bg:#fff;--acc:#c0392b;--soft:#f6f7f9}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg)}
header{padding:18px 28px 10px;border-bottom:1px solid var(--bd)}
header h1{margin:0;font-size:21px}
header .sub{color:var(--mut);font-size:12.5px}
nav{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid var(--bd);padding:6px 28px}
nav a{margin-right:16px;color:var(--fg);text-decoration:none;font-weight:600;font-size:13px}
nav a:hover{color:var(--acc)}
main{padding:6px 28px 40px;max-width:1320px}
h2{font-size:17px;margin:26px 0 8px;padding-bottom:4px;border-bottom:2px solid var(--fg)}
h3{font-size:15px;margin:0 0 6px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(135px,1fr));gap:10px;margin:12px 0}
.card{border:1px solid var(--bd);border-radius:6px;padding:9px 12px;background:var(--soft)}
.card b{display:block;font-size:20px}
.card span{color:var(--mut);font-size:12px}
.card.alert b{color:var(--acc)}
.note{color:var(--mut);font-size:12.5px}
.note.alert-note{color:var(--acc)}
table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--bd);vertical-align:top}
th{background:var(--soft);position:sticky;top:34px}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:after{content:" \\2195";color:#aab}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.mono,code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px;word-break:break-all}
.score{display:inline-block;min-width:42px;padding:0 5px;border-radius:3px;color:#fff;font-weight:600;text-align:center}
.lvl{font-size:11px;padding:1px 6px;border-radius:8px;border:1px solid}
.lvl.high{color:#a12;border-color:#a12}.lvl.medium{color:#b60;border-color:#b60}.lvl.low{color:#567;border-color:#567}
.cluster,.acct{border:1px solid var(--bd);border-radius:8px;padding:12px 14px;margin:12px 0}
.acct-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(600px,1fr));gap:0 12px}
.acct{margin:6px 0;padding:8px 12px;min-width:0}
.acct h3{font-size:14px}
.acct table{font-size:12.5px;margin:2px 0 4px}
.acct td,.acct th{padding:2px 6px}
.acct svg.tl{width:100%;height:auto}
.cluster .row{display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start}
.cluster .row>div{flex:1 1 380px;min-width:0}
.lg{display:inline-block;margin-right:12px;font-size:12px;color:var(--mut)}
.lg i{display:inline-block;width:14px;height:4px;margin-right:4px;vertical-align:middle}
.bars td.bar{width:45%}
.bars .b{height:12px;background:var(--acc);border-radius:2px;opacity:.75}
.hists{display:flex;flex-wrap:wrap;gap:14px}
.hists figure{margin:0;border:1px solid var(--bd);border-radius:6px;padding:4px}
.hists figcaption{font-size:12px;color:var(--mut);max-width:300px;padding:0 6px 4px}
svg text.ht{font-size:12px;font-weight:600;fill:var(--fg)}
svg text.ax{font-size:10px;fill:var(--mut)}
.tlrow{display:flex;align-items:center;gap:8px;margin:2px 0}
.tlrow .lab{width:180px;font-size:12px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.prompt{white-space:pre-wrap;background:var(--soft);border-left:3px solid var(--bd);padding:5px 8px;margin:4px 0;font-size:12.5px;max-height:4.6em;overflow:auto}
details summary{cursor:pointer;color:var(--mut);font-size:12.5px}
.scroll{max-height:620px;overflow:auto;border:1px solid var(--bd);border-radius:4px}
.scroll table{margin:0}
.scroll th{top:0}
input.filter{padding:4px 8px;border:1px solid var(--bd);border-radius:4px;width:320px;margin:4px 0}
.mem{white-space:nowrap}
.mem .mono{word-break:normal}
.legend-score{display:inline-block;width:120px;height:10px;background:linear-gradient(90deg,#7f8c9a,#c0392b);vertical-align:middle;border-radius:2px}
"""

JS = """
(function(){
  function key(td){var v=td.getAttribute('data-v');if(v===null)v=td.textContent;var n=parseFloat(v);return isNaN(n)||/[^0-9eE+.\\-]/.test(v.trim())?v.toLowerCase():n;}
  document.querySelectorAll('table.sortable').forEach(function(t){
    t.querySelectorAll('th').forEach(function(th,i){
      th.addEventListener('click',function(){
        var tb=t.tBodies[0],rows=Array.prototype.slice.call(tb.rows),asc=th.getAttribute('data-dir')!=='asc';
        th.setAttribute('data-dir',asc?'asc':'desc');
        rows.sort(function(a,b){var x=key(a.cells[i]),y=key(b.cells[i]);if(typeof x!==typeof y){x=String(x);y=String(y);}return (x<y?-1:x>y?1:0)*(asc?1:-1);});
        var f=document.createDocumentFragment();rows.forEach(function(r){f.appendChild(r);});tb.appendChild(f);
      });
    });
  });
  document.querySelectorAll('input.filter').forEach(function(inp){
    var t=document.getElementById(inp.getAttribute('data-table'));
    inp.addEventListener('input',function(){
      var q=inp.value.toLowerCase();
      Array.prototype.forEach.call(t.tBodies[0].rows,function(r){r.style.display=r.textContent.toLowerCase().indexOf(q)<0?'none':'';});
    });
  });
  document.body.setAttribute('data-ready','1');
})();
"""
