// The evomerge run report. Reads the JSON blob in #evomerge-data and draws the page with DOM calls: every piece of
// run data reaches the screen through textContent or setAttribute, never through innerHTML.
(function () {
  "use strict";

  const DATA = JSON.parse(document.getElementById("evomerge-data").textContent);
  const RUN = DATA.run;
  const MEMBERS = DATA.members;
  const BY_ID = new Map(MEMBERS.map((m) => [m.id, m]));
  const SVG_NS = "http://www.w3.org/2000/svg";

  // ------------------------------------------------------------------ small helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function sv(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, String(v));
    }
  }

  function append(node, children) {
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
  }

  function svgTitle(text) {
    return sv("title", { text });
  }

  function fmt(v, digits = 4) {
    return v === null || v === undefined ? "–" : v.toFixed(digits);
  }

  // a score and its standard error over documents, as evomerge.outcomes.fmt_pm writes them: "0.7125 ±0.051"
  function fmtPm(v, se, digits = 4) {
    return fmt(v, digits) + (v === null || v === undefined || se === null || se === undefined ? "" : ` ±${se.toFixed(Math.min(digits, 3))}`);
  }

  // a table cell with a score and, muted after it, ±1 standard error
  function numCell(v, se) {
    const td = el("td", { class: "num", text: fmt(v) });
    if (v !== null && v !== undefined && se !== null && se !== undefined) td.appendChild(el("span", { class: "se", text: ` ±${se.toFixed(3)}` }));
    return td;
  }

  function fmtGap(v) {
    if (v === null || v === undefined) return "–";
    return (v > 0 ? "+" : v < 0 ? "−" : "±") + Math.abs(v).toFixed(4);
  }

  function gap(select, report) {
    return select === null || report === null || select === undefined || report === undefined
      ? null : report - select;
  }

  function opColor(op) {
    return DATA.colors[op] || "#444444";
  }

  function splitText(name) {
    const s = RUN.splits[name];
    return `split '${s.split}'` + (s.limit === null ? ", all documents" : `, first ${s.limit} documents per task`) + anchorText(name);
  }

  // where the split is estimated from anchor documents (fitness.select.estimator): how many, of how many
  function anchorText(name) {
    const a = RUN.splits[name].anchors;
    if (!a) return "";
    const counts = [...new Set(Object.values(a).map((t) => `${t.anchors} of ${t.documents}`))].join(", ");
    return `; bred members and candidates are estimated from ${counts} anchor documents per task (≈: an estimate, ± its standard error), seeds scored on every document`;
  }

  function truncate(text, n) {
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }

  // viridis, sampled at nine points: perceptually even and readable in grey
  const VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"];

  function hexToRgb(hex) {
    const n = parseInt(hex.slice(1), 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }

  function viridis(t) {
    const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
    const a = hexToRgb(VIRIDIS[i]), b = hexToRgb(VIRIDIS[i + 1]), f = x - i;
    return a.map((v, k) => Math.round(v + (b[k] - v) * f));
  }

  function rgb(c) {
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  function textOn(c) {
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2] > 140 ? "#111" : "#fff";
  }

  function extent(values) {
    const v = values.filter((x) => x !== null && x !== undefined && isFinite(x));
    return v.length ? [Math.min(...v), Math.max(...v)] : null;
  }

  function niceTicks(lo, hi, count) {
    if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((s) => s * mag).find((s) => raw <= s);
    const out = [];
    for (let t = Math.ceil(lo / step - 1e-9) * step; t <= hi + 1e-9; t += step) out.push(+t.toFixed(10));
    return { ticks: out, lo: Math.min(lo, out[0]), hi: Math.max(hi, out[out.length - 1]), step };
  }

  // ------------------------------------------------------------------ a small SVG chart

  // series: {label, color, points: [{x, y, ex, ey, title}], line, dash, step, radius, width, legend}; a point's ex
  // and ey (one standard error) draw error bars, clipped to the axes
  function chart(opts) {
    const W = opts.width || 520, H = opts.height || 300;
    const M = { l: 52, r: 14, t: 12, b: opts.xLabel ? 40 : 26 };
    const pts = opts.series.flatMap((s) => s.points);
    const spread = (v, e) => (e ? [v - e, v + e] : [v]);
    let [x0, x1] = opts.xDomain || extent(pts.flatMap((p) => spread(p.x, p.ex))) || [0, 1];
    let [y0, y1] = opts.yDomain || extent(pts.flatMap((p) => p.y === null || p.y === undefined ? [] : spread(p.y, p.ey))) || [0, 1];
    if (!opts.yDomain) { const pad = (y1 - y0) * 0.08 || 0.05; y0 -= pad; y1 += pad; }
    const yt = niceTicks(y0, y1, opts.yTickCount || 5);
    y0 = yt.lo; y1 = yt.hi;
    let xticks;
    if (opts.integerX) {
      if (x1 - x0 < 1) { x0 -= 0.5; x1 += 0.5; }
      const every = Math.max(1, Math.ceil((x1 - x0) / 10));
      xticks = [];
      for (let t = Math.ceil(x0); t <= x1; t += every) xticks.push(t);
      x0 -= 0.3; x1 += 0.3;
    } else {
      const xt = niceTicks(x0, x1, 5);
      xticks = xt.ticks; x0 = xt.lo; x1 = xt.hi;
    }
    const X = (x) => M.l + (x - x0) / (x1 - x0) * (W - M.l - M.r);
    const Y = (y) => H - M.b - (y - y0) / (y1 - y0) * (H - M.t - M.b);
    const root = sv("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
    if (opts.title) root.appendChild(svgTitle(opts.title));
    const grid = sv("g", { class: "grid" });
    for (const t of yt.ticks) {
      grid.appendChild(sv("line", { x1: M.l, x2: W - M.r, y1: Y(t), y2: Y(t) }));
      grid.appendChild(sv("text", { x: M.l - 6, y: Y(t) + 4, "text-anchor": "end", text: +t.toFixed(4) }));
    }
    for (const t of xticks) {
      grid.appendChild(sv("text", { x: X(t), y: H - M.b + 16, "text-anchor": "middle", text: opts.xTickFormat ? opts.xTickFormat(t) : +t.toFixed(4) }));
    }
    grid.appendChild(sv("line", { class: "axis", x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b }));
    grid.appendChild(sv("line", { class: "axis", x1: M.l, x2: M.l, y1: M.t, y2: H - M.b }));
    if (opts.xLabel) grid.appendChild(sv("text", { class: "axis-label", x: (M.l + W - M.r) / 2, y: H - 6, "text-anchor": "middle", text: opts.xLabel }));
    if (opts.yLabel) grid.appendChild(sv("text", { class: "axis-label", x: 12, y: (M.t + H - M.b) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(M.t + H - M.b) / 2})`, text: opts.yLabel }));
    root.appendChild(grid);
    if (opts.diagonal) {
      const lo = Math.max(x0, y0), hi = Math.min(x1, y1);
      if (hi > lo) root.appendChild(sv("line", { class: "diagonal", x1: X(lo), y1: Y(lo), x2: X(hi), y2: Y(hi) }));
    }
    for (const s of opts.series) {
      const p = s.points.filter((q) => q.y !== null && q.y !== undefined);
      if (s.line && p.length) {
        let d = "";
        p.forEach((q, i) => {
          if (i === 0) d += `M${X(q.x)},${Y(q.y)}`;
          else if (s.step) d += `H${X(q.x)}V${Y(q.y)}`;
          else d += `L${X(q.x)},${Y(q.y)}`;
        });
        root.appendChild(sv("path", { d, fill: "none", stroke: s.color, "stroke-width": s.width || 2, "stroke-dasharray": s.dash || null }, svgTitle(s.label)));
      }
      if (s.radius) {
        const bars = sv("g", { class: "errbars" });
        const clip = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
        for (const q of p) {
          const color = q.color || s.color;
          if (q.ey) bars.appendChild(sv("line", { x1: X(q.x), x2: X(q.x), y1: Y(clip(q.y - q.ey, y0, y1)), y2: Y(clip(q.y + q.ey, y0, y1)), stroke: color }));
          if (q.ex) bars.appendChild(sv("line", { x1: X(clip(q.x - q.ex, x0, x1)), x2: X(clip(q.x + q.ex, x0, x1)), y1: Y(q.y), y2: Y(q.y), stroke: color }));
        }
        if (bars.childNodes.length) root.appendChild(bars);
        const g = sv("g", { class: "points" });
        for (const q of p) {
          g.appendChild(sv("circle", { cx: X(q.x), cy: Y(q.y), r: q.radius || s.radius, fill: q.color || s.color, stroke: q.ring ? "#111" : "#fff", "stroke-width": q.ring ? 2 : 0.8, "fill-opacity": s.opacity || 0.9 }, svgTitle(q.title || `${s.label}: ${fmt(q.y)}`)));
        }
        root.appendChild(g);
      }
    }
    const wrap = el("figure", { class: "chart-wrap" }, root);
    const legend = opts.series.filter((s) => s.legend !== false);
    if (legend.length) {
      wrap.appendChild(el("figcaption", { class: "legend" }, legend.map((s) =>
        el("span", { class: "legend-item" }, el("span", { class: s.line ? "swatch line" + (s.dash ? " dashed" : "") : "swatch dot", style: null, "data-color": s.color }), s.label))));
    }
    if (opts.caption) wrap.appendChild(el("figcaption", { class: "caption", text: opts.caption }));
    paintSwatches(wrap);
    return wrap;
  }

  function paintSwatches(root) {
    for (const s of root.querySelectorAll("[data-color]")) {
      if (s.classList.contains("line")) s.style.borderTopColor = s.dataset.color;
      else s.style.background = s.dataset.color;
    }
  }

  // ------------------------------------------------------------------ header

  function header() {
    const best = RUN.best === null ? null : BY_ID.get(RUN.best);
    const alive = MEMBERS.filter((m) => m.state === "alive").length;
    const tasks = RUN.tasks.map((t) => `${t.task} ${t.metric} ×${t.weight}`).join(", ");
    const ops = [RUN.crossover ? `crossover ${RUN.crossover}` : null, RUN.mutation.length ? `mutation ${RUN.mutation.join(" / ")}` : null].filter(Boolean).join(", ");
    const cards = [
      card("generations", `${RUN.generations_done} / ${RUN.generations}`, RUN.finished ? "finished" : "in progress or stopped"),
      card("members", String(MEMBERS.length), `${alive} alive`),
    ];
    if (best) {
      cards.push(card("best by select", best.name, `select ${fmtPm(best.select, best.select_se)} · report ${fmtPm(best.report, best.report_se)} · gap ${fmtGap(gap(best.select, best.report))}`, best.id));
    }
    return el("header", {},
      el("h1", {}, "evomerge report · ", el("span", { class: "run-name", text: RUN.name })),
      el("p", { class: "meta", text: `${RUN.dir} · seed ${RUN.seed} · population ${RUN.population_size}, ${RUN.children_per_generation} children per generation · ${ops}` }),
      el("p", { class: "meta", text: `fitness = weighted mean of ${tasks} (${RUN.num_fewshot}-shot). select: ${splitText("select")} (what selection and CMA-ES see). report: ${splitText("report")} (held out).` }),
      el("div", { class: "cards" }, cards));
  }

  function card(label, value, note, memberId) {
    const c = el("div", { class: "card" }, el("div", { class: "card-label", text: label }), el("div", { class: "card-value", text: value }), el("div", { class: "card-note", text: note }));
    if (memberId !== undefined) {
      c.classList.add("clickable");
      c.addEventListener("click", () => { select(memberId); document.getElementById("lineage").scrollIntoView({ behavior: "smooth" }); });
    }
    return c;
  }

  // ------------------------------------------------------------------ lineage tree

  const NODE_W = 164, NODE_H = 42, COL_GAP = 64, ROW_H = 56, TOP = 40, LEFT = 12;
  let colorSplit = "select";
  let selected = null;
  const nodes = new Map();
  let treeSvg = null;

  function lineageOf(id) {
    const out = new Set([id]);
    const up = [id], down = [id];
    while (up.length) for (const p of BY_ID.get(up.pop()).parents) if (!out.has(p)) { out.add(p); up.push(p); }
    const seen = new Set([id]);
    while (down.length) for (const c of BY_ID.get(down.pop()).children) if (!seen.has(c)) { seen.add(c); out.add(c); down.push(c); }
    return out;
  }

  function highlight(id) {
    if (id === null) { treeSvg.classList.remove("focus"); return; }
    const keep = lineageOf(id);
    treeSvg.classList.add("focus");
    for (const [mid, g] of nodes) g.classList.toggle("on", keep.has(mid));
    for (const e of treeSvg.querySelectorAll(".edge")) {
      e.classList.toggle("on", keep.has(+e.dataset.child) && keep.has(+e.dataset.parent));
    }
  }

  function nodeFill(m) {
    const v = m[colorSplit];
    const ext = extent(MEMBERS.map((x) => x[colorSplit]));
    if (v === null || !ext) return null;
    return viridis(ext[1] - ext[0] < 1e-12 ? 0.5 : (v - ext[0]) / (ext[1] - ext[0]));
  }

  function paintNodes() {
    for (const [id, g] of nodes) {
      const m = BY_ID.get(id);
      let c = nodeFill(m);
      if (c && m.state === "intermediate") c = c.map((v) => Math.round(v + (255 - v) * 0.6));  // a step, not a member
      g.querySelector("rect.body").setAttribute("fill", c ? rgb(c) : "#e5e7eb");
      for (const t of g.querySelectorAll("text")) t.setAttribute("fill", c ? textOn(c) : "#111");
    }
    const ext = extent(MEMBERS.map((x) => x[colorSplit]));
    document.getElementById("scale-lo").textContent = ext ? fmt(ext[0]) : "–";
    document.getElementById("scale-hi").textContent = ext ? fmt(ext[1]) : "–";
    document.getElementById("scale-name").textContent = `${colorSplit} fitness`;
  }

  function tree() {
    if (!MEMBERS.length) {
      return el("section", { id: "lineage" }, el("h2", { text: "Lineage" }),
        el("p", { class: "muted", text: "No members yet: the run has not added its seeds." }));
    }
    const ncols = Math.max(...MEMBERS.map((m) => m.col)) + 1;
    const nrows = Math.max(...MEMBERS.map((m) => m.row), ...MEMBERS.flatMap((m) => m.edges.flatMap((e) => e.lanes.map((l) => l[1])))) + 1;
    const colGen = new Map(MEMBERS.map((m) => [m.col, m.generation]));
    const W = LEFT * 2 + ncols * NODE_W + (ncols - 1) * COL_GAP;
    const H = Math.max(420, TOP + nrows * ROW_H + 8);  // as tall as the member panel beside it, the tree centred
    const top = TOP + (H - (TOP + nrows * ROW_H + 8)) / 2;
    const x = (m) => LEFT + m.col * (NODE_W + COL_GAP);
    const y = (m) => top + m.row * ROW_H;
    treeSvg = sv("svg", { id: "tree", width: W, height: H, viewBox: `0 0 ${W} ${H}`, "data-w": W, "data-h": H });

    // one band per generation, behind everything, with its name on top
    const gens = [...new Set(MEMBERS.map((m) => m.generation))].sort((a, b) => a - b);
    gens.forEach((g, i) => {
      const cols = [...colGen].filter(([, gen]) => gen === g).map(([c]) => c);
      const c0 = Math.min(...cols), c1 = Math.max(...cols);
      const bx = LEFT + c0 * (NODE_W + COL_GAP) - COL_GAP / 2 + 6, bw = (c1 - c0 + 1) * (NODE_W + COL_GAP) - 12;
      treeSvg.appendChild(sv("rect", { class: "band" + (i % 2 ? " odd" : ""), x: Math.max(0, bx), y: 0, width: bw, height: H, rx: 8 }));
      const survivors = g === 0 ? null : (DATA.generations.find((e) => e.generation === g) || {}).population;
      const label = g === 0 ? "seeds" : `generation ${g}`;
      treeSvg.appendChild(sv("text", { class: "band-label", x: Math.max(0, bx) + bw / 2, y: 18, "text-anchor": "middle", text: label },
        svgTitle(survivors ? `survivors after generation ${g}: ${survivors.map((i) => BY_ID.get(i).name).join(", ")}` : label)));
    });

    const edges = sv("g", { class: "edges" });
    for (const m of MEMBERS) {
      for (const e of m.edges) {
        const p = BY_ID.get(e.parent);
        // from the parent's right side, along its lane through each column it skips, to the child's left side
        let px = x(p) + NODE_W, py = y(p) + NODE_H / 2;
        let d = `M${px},${py}`;
        const curve = (qx, qy) => {
          const dx = Math.max(20, (qx - px) / 2);
          d += ` C${px + dx},${py} ${qx - dx},${qy} ${qx},${qy}`;
          px = qx; py = qy;
        };
        for (const [col, row] of e.lanes) {
          curve(LEFT + col * (NODE_W + COL_GAP), top + row * ROW_H + NODE_H / 2);
          px += NODE_W;
          d += ` H${px}`;
        }
        curve(x(m), y(m) + NODE_H / 2);
        edges.appendChild(sv("path", {
          class: "edge", "data-parent": p.id, "data-child": m.id, fill: "none", stroke: opColor(m.operator),
          "stroke-width": edgeWeight(m, p), d,
        }, svgTitle(`${p.name} → ${m.name}: ${e.label}`)));
      }
    }
    treeSvg.appendChild(edges);

    const layer = sv("g", { class: "nodes" });
    for (const m of MEMBERS) {
      const g = sv("g", {
        class: `node ${m.state}`, "data-id": m.id, "data-name": m.name, tabindex: 0, role: "button",
        transform: `translate(${x(m)},${y(m)})`,
      });
      g.appendChild(svgTitle(`${m.name}\ngeneration ${m.generation}, ${m.operator}, ${m.state}\nselect ${fmtPm(m.select, m.select_se)} · report ${fmtPm(m.report, m.report_se)}`));
      g.appendChild(sv("rect", { class: "body", width: NODE_W, height: NODE_H, rx: 6 }));
      g.appendChild(sv("rect", { class: "op", width: 6, height: NODE_H, rx: 2, fill: opColor(m.operator) }));
      g.appendChild(sv("text", { class: "name", x: 14, y: 18, text: truncate(m.name, 21) }));
      g.appendChild(sv("text", { class: "scores", x: 14, y: 35, text: `sel ${fmt(m.select, 3)} · rep ${fmt(m.report, 3)}` }));
      if (m.state === "alive") g.appendChild(sv("text", { class: "star", x: NODE_W - 8, y: 17, "text-anchor": "end", text: "★" }));
      g.addEventListener("click", () => select(m.id));
      g.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); select(m.id); } });
      g.addEventListener("mouseenter", () => highlight(m.id));
      g.addEventListener("mouseleave", () => highlight(selected));
      nodes.set(m.id, g);
      layer.appendChild(g);
    }
    treeSvg.appendChild(layer);

    const splitPicker = el("span", { class: "seg" }, ["select", "report"].map((s) => el("button", {
      type: "button", class: s === colorSplit ? "active" : null, "data-split": s, text: s,
      onclick: (ev) => {
        colorSplit = s;
        for (const b of ev.target.parentNode.children) b.classList.toggle("active", b === ev.target);
        paintNodes();
      },
    })));
    const zoomPicker = el("span", { class: "seg" }, [["fit", "fit width"], ["full", "100%"]].map(([z, label]) => el("button", {
      type: "button", "data-zoom": z, text: label,
      onclick: (ev) => {
        treeZoom = z;
        for (const b of ev.target.parentNode.children) b.classList.toggle("active", b === ev.target);
        fitTree();
      },
    })));
    const ops = [...new Set(MEMBERS.filter((m) => m.edges.length).map((m) => m.operator))];
    const legend = el("div", { class: "toolbar" },
      el("span", { class: "legend-item" }, "colour by ", splitPicker),
      el("span", { class: "legend-item" }, "size ", zoomPicker),
      el("span", { class: "legend-item gradient" }, el("span", { id: "scale-lo" }), el("span", { class: "ramp" }), el("span", { id: "scale-hi" }), el("span", { id: "scale-name", class: "muted" })),
      ops.map((op) => el("span", { class: "legend-item" }, el("span", { class: "swatch line", "data-color": opColor(op) }), op)),
      el("span", { class: "legend-item" }, el("span", { class: "mark-alive", text: "★" }), "alive"),
      el("span", { class: "legend-item" }, el("span", { class: "mark-box retired" }), "retired"),
      el("span", { class: "legend-item" }, el("span", { class: "mark-box intermediate" }), "intermediate (merged, then mutated)"));
    paintSwatches(legend);

    const details = el("aside", { id: "details" }, el("p", { class: "muted", text: "Click a member in the tree or the leaderboard to see its recipe, parents, operator parameters and every score. Hover to trace its lineage." }));
    return el("section", { id: "lineage" },
      el("h2", { text: "Lineage" }),
      el("p", { class: "muted", text: "Generations left to right, seeds first. Edges are coloured by the operator that made the child (merge edges are thicker for a larger merge weight); nodes by fitness." }),
      legend,
      el("div", { class: "tree-layout" }, el("div", { class: "tree-scroll" }, treeSvg), details));
  }

  let treeZoom = "auto";  // auto: shrink a tree a little too wide for its box (down to 70%), scroll a wider one

  function fitTree() {
    const W = +treeSvg.dataset.w, H = +treeSvg.dataset.h;
    const avail = treeSvg.parentNode.clientWidth;
    const fit = Math.min(1, avail / W);
    const k = treeZoom === "fit" ? fit : treeZoom === "full" ? 1 : fit >= 0.7 ? fit : 1;
    treeSvg.setAttribute("width", Math.floor(W * k));
    treeSvg.setAttribute("height", Math.floor(H * k));
    // the member panel is as tall as the tree, never taller than the window
    const h = Math.max(420 * k, Math.min(H * k + 2, window.innerHeight * 0.85));
    document.getElementById("details").style.maxHeight = `${Math.round(h)}px`;
  }

  function edgeWeight(child, parent) {
    const merge = child.params && child.params.merge;
    const w = merge && merge[parent.name] && merge[parent.name].weight;
    if (!Array.isArray(w) || !w.length) return 2.2;
    const mean = w.reduce((a, b) => a + b, 0) / w.length;
    return 1 + 3.5 * Math.min(1.5, Math.max(0, mean)) / 1.5;
  }

  // ------------------------------------------------------------------ the member panel

  function memberButton(id) {
    const m = BY_ID.get(id);
    return el("button", { type: "button", class: "member-link", text: m.name, onclick: () => select(id) });
  }

  function details(m) {
    const aside = document.getElementById("details");
    aside.replaceChildren();
    aside.appendChild(el("h3", { class: "member-name", text: m.name }));
    aside.appendChild(el("div", { class: "chips" },
      el("span", { class: "chip", text: `generation ${m.generation}` }),
      el("span", { class: "chip op" }, el("span", { class: "swatch dot", "data-color": opColor(m.operator) }), m.operator),
      el("span", { class: `chip state ${m.state}`, text: m.state }),
      m.survived.length ? el("span", { class: "chip", text: `survived generation${m.survived.length > 1 ? "s" : ""} ${m.survived.join(", ")}` }) : null));

    const rows = [["weighted", m]].concat(RUN.tasks.map((t) => [`${t.task} (${t.metric})`, m.tasks[t.task]]));
    aside.appendChild(el("table", { class: "mini scores-se", title: "± one standard error over documents" },
      el("thead", {}, el("tr", {}, ["", "select", "report", "gap"].map((h) => el("th", { text: h })))),
      el("tbody", {}, rows.map(([label, v]) => el("tr", {}, el("td", { text: label }), numCell(v.select, v.select_se), numCell(v.report, v.report_se), gapCell(gap(v.select, v.report)))))));

    if (m.path) {
      aside.appendChild(el("h4", { text: `Layer path (${pathLength(m.path)} layers)` }));
      aside.appendChild(pathStrip(m, aside.clientWidth - 24));
    }
    aside.appendChild(el("h4", { text: "Operator parameters" }));
    aside.appendChild(el("pre", { class: "params", text: JSON.stringify(m.params, null, 2) }));
    aside.appendChild(el("h4", { text: m.parents.length ? "Made from" : "Source" }));
    if (m.edges.length) {
      aside.appendChild(el("ul", { class: "edges-list" }, m.edges.map((e) => el("li", {}, memberButton(e.parent), el("span", { class: "edge-label", text: e.label })))));
    } else {
      aside.appendChild(el("p", { class: "muted", text: m.params.source ? `seed from ${m.params.source}` : "seed" }));
    }
    if (m.children.length) {
      aside.appendChild(el("h4", { text: "Children" }));
      aside.appendChild(el("p", { class: "children" }, m.children.map((c) => memberButton(c))));
    }
    aside.appendChild(el("h4", { text: "Recipe" }));
    aside.appendChild(el("pre", { class: "recipe", id: "recipe", text: m.recipe }));
    aside.appendChild(el("h4", { text: `Every score (${m.scores.length})` }));
    aside.appendChild(el("table", { class: "mini scores" },
      el("thead", {}, el("tr", {}, ["task", "split", "metric", "docs", "shots", "value"].map((h) => el("th", { text: h })))),
      el("tbody", {}, m.scores.map((s) => el("tr", { title: s.reused_from ? `reused from ${s.reused_from}` : null },
        el("td", { text: s.task }), el("td", { text: s.estimator ? `${s.split} ≈ ${s.estimator}` : s.split }), el("td", { text: s.metric }),
        el("td", { class: "num", text: s.limit === null ? `${s.docs}` : `${s.docs}/${s.limit}` }),
        el("td", { class: "num", text: s.fewshot }), numCell(s.value, s.se))))));
    paintSwatches(aside);
  }

  const PATH_COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"];

  function pathLength(path) {
    return path.reduce((n, r) => n + r.stop - r.start, 0);
  }

  // A layer path as a strip: one cell per layer in path order, coloured by the parent it comes from and labelled
  // with its index there; a crossing's scale is written above its first layer.
  function pathStrip(m, width) {
    const parents = [...new Set(m.path.map((r) => r.parent))];
    const n = pathLength(m.path), height = 46;
    const cell = width ? Math.max(4, Math.min(14, Math.floor((width - 34) / n))) : 14;  // numbered from 12 px
    const svg = sv("svg", { class: "path-strip", width: Math.max(n * cell + 34, 120), height: height + 16, role: "img" });
    svg.appendChild(svgTitle(`${m.name}: ${m.path.map((r) => `${r.parent}[${r.start}-${r.stop - 1}]`).join(" ")}`));
    let x = 1;
    for (const run of m.path) {
      const color = PATH_COLORS[parents.indexOf(run.parent) % PATH_COLORS.length];
      if (run.scale !== 1) svg.appendChild(sv("text", { x: x + 1, y: 10, class: "path-scale", text: `×${fmt(run.scale, 2)}` }));
      for (let layer = run.start; layer < run.stop; layer++, x += cell) {
        const g = sv("g", {}, sv("rect", { x, y: 14, width: cell - 1, height: 20, fill: color }),
          cell >= 12 ? sv("text", { x: x + cell / 2 - 0.5, y: 28, "text-anchor": "middle", class: "path-layer", fill: textOn(hexToRgb(color)), text: layer }) : null);
        g.appendChild(svgTitle(`${run.parent} layer ${layer}`));
        svg.appendChild(g);
      }
    }
    let lx = 1;
    for (const [i, p] of parents.entries()) {
      svg.appendChild(sv("rect", { x: lx, y: height, width: 10, height: 10, fill: PATH_COLORS[i % PATH_COLORS.length] }));
      svg.appendChild(sv("text", { x: lx + 13, y: height + 9, class: "path-legend", text: p }));
      lx += 20 + 7 * p.length;
    }
    return el("div", { class: "path-wrap" }, svg);
  }

  function pathsSection() {
    const paths = MEMBERS.filter((m) => m.path);
    if (!paths.length) return null;
    return el("section", { id: "paths" }, el("h2", { text: "Layer paths (data-flow-space children)" }),
      el("p", { class: "muted", text: "Each child's decoder layers in the order a token passes them, coloured by the parent each comes from; a number above a layer is the scale of its residual branches where the path crosses from one parent to another." }),
      paths.map((m) => el("div", { class: "path-row" }, memberButton(m.id), pathStrip(m))));
  }

  function select(id) {
    selected = id;
    for (const [mid, g] of nodes) g.classList.toggle("selected", mid === id);
    for (const tr of document.querySelectorAll("#board tbody tr")) tr.classList.toggle("selected", +tr.dataset.id === id);
    highlight(id);
    details(BY_ID.get(id));
  }

  // ------------------------------------------------------------------ leaderboard

  const board = { key: "select", dir: -1, gen: "all", op: "all", alive: false, intermediates: false };

  function boardColumns() {
    const cols = [
      { key: "rank", label: "#", num: true, get: (m) => m.rank },
      { key: "name", label: "member", get: (m) => m.name },
      { key: "generation", label: "gen", num: true, get: (m) => m.generation },
      { key: "operator", label: "operator", get: (m) => m.operator },
      { key: "state", label: "state", get: (m) => m.state },
    ];
    const groups = [{ key: "", label: "weighted fitness", get: (m, s) => m[s], se: (m, s) => m[`${s}_se`] }].concat(
      RUN.tasks.map((t) => ({ key: t.task, label: `${t.task} (${t.metric}${RUN.tasks.length > 1 ? ` ×${t.weight}` : ""})`, get: (m, s) => m.tasks[t.task][s], se: (m, s) => m.tasks[t.task][`${s}_se`] })));
    if (RUN.shared_fitness) groups.splice(1, 0, { key: "shared", label: "shared fitness (among the alive)", get: (m, s) => (m.shared ? m.shared[s] : null), se: () => null });
    return { cols, groups };
  }

  function boardRows() {
    const ranked = MEMBERS.filter((m) => m.state !== "intermediate")
      .slice().sort((a, b) => (a.select === null) - (b.select === null) || (b.select || 0) - (a.select || 0) || a.id - b.id);
    const rank = new Map(ranked.map((m, i) => [m.id, i + 1]));
    return MEMBERS.map((m) => Object.assign({}, m, { rank: rank.get(m.id) ?? null }));
  }

  function leaderboard() {
    const { cols, groups } = boardColumns();
    const rows = boardRows();
    const valueOf = new Map();
    for (const c of cols) valueOf.set(c.key, c.get);
    for (const g of groups) {
      for (const s of ["select", "report"]) valueOf.set(`${g.key}:${s}`, (m) => g.get(m, s));
      valueOf.set(`${g.key}:gap`, (m) => gap(g.get(m, "select"), g.get(m, "report")));
    }
    valueOf.set("select", valueOf.get(":select"));

    const headTop = el("tr", {}, cols.map((c) => sortable(el("th", { rowspan: 2, class: c.num ? "num" : null, text: c.label }), c.key, !c.num || c.key === "rank" || c.key === "generation")),
      groups.map((g) => el("th", { colspan: 3, class: "group", text: g.label })));
    const headSub = el("tr", {}, groups.flatMap((g) => [
      sortable(el("th", { class: "num sub", text: "select" }), `${g.key}:select`, false),
      sortable(el("th", { class: "num sub", text: "report" }), `${g.key}:report`, false),
      sortable(el("th", { class: "num sub gap", text: "gap", title: "report − select: negative when the search overfits its select split" }), `${g.key}:gap`, false),
    ]));
    const table = el("table", { id: "board" }, el("thead", {}, headTop, headSub), el("tbody"));

    function sortable(th, key, ascending) {
      th.classList.add("sortable");
      th.dataset.sort = key;
      th.addEventListener("click", () => {
        if (board.key === key || (key === ":select" && board.key === "select")) board.dir = -board.dir;
        else { board.key = key; board.dir = ascending ? 1 : -1; }
        draw();
      });
      return th;
    }

    const gens = [...new Set(MEMBERS.map((m) => m.generation))].sort((a, b) => a - b);
    const ops = [...new Set(MEMBERS.map((m) => m.operator))].sort();
    const count = el("span", { class: "muted count" });
    const filters = el("div", { class: "toolbar filters" },
      el("label", {}, "generation ", el("select", { id: "filter-gen", onchange: (ev) => { board.gen = ev.target.value; draw(); } },
        el("option", { value: "all", text: "all" }), gens.map((g) => el("option", { value: g, text: g === 0 ? "0 (seeds)" : String(g) })))),
      el("label", {}, "operator ", el("select", { id: "filter-op", onchange: (ev) => { board.op = ev.target.value; draw(); } },
        el("option", { value: "all", text: "all" }), ops.map((o) => el("option", { value: o, text: o })))),
      el("label", {}, el("input", { type: "checkbox", id: "filter-alive", onchange: (ev) => { board.alive = ev.target.checked; draw(); } }), " alive only"),
      MEMBERS.some((m) => m.state === "intermediate")
        ? el("label", {}, el("input", { type: "checkbox", id: "filter-intermediate", onchange: (ev) => { board.intermediates = ev.target.checked; draw(); } }), " include intermediates")
        : null,
      count);

    function draw() {
      const get = valueOf.get(board.key);
      const shown = rows.filter((m) => (board.gen === "all" || m.generation === +board.gen)
        && (board.op === "all" || m.operator === board.op)
        && (!board.alive || m.state === "alive")
        && (board.intermediates || m.state !== "intermediate"));
      shown.sort((a, b) => {
        const va = get(a), vb = get(b);
        if (va === null || va === undefined) return (vb === null || vb === undefined) ? a.id - b.id : 1;
        if (vb === null || vb === undefined) return -1;
        const c = typeof va === "string" ? va.localeCompare(vb) : va - vb;
        return c * board.dir || a.id - b.id;
      });
      const body = table.tBodies[0];
      body.replaceChildren(...shown.map((m) => {
        const tr = el("tr", { "data-id": m.id, class: [m.state, m.id === selected ? "selected" : ""].join(" ").trim() },
          el("td", { class: "num", text: m.rank ?? "–" }),
          el("td", { class: "member" }, el("span", { class: "swatch dot", "data-color": opColor(m.operator) }), memberButton(m.id)),
          el("td", { class: "num", text: m.generation }),
          el("td", { text: m.operator }),
          el("td", { class: `state ${m.state}`, text: m.state }),
          groups.flatMap((g) => {
            const s = g.get(m, "select"), r = g.get(m, "report");
            return [numCell(s, g.se(m, "select")), numCell(r, g.se(m, "report")), gapCell(gap(s, r))];
          }));
        tr.addEventListener("click", (ev) => { if (ev.target.tagName !== "BUTTON") select(m.id); });
        return tr;
      }));
      paintSwatches(body);
      for (const th of table.querySelectorAll("th.sortable")) {
        const on = th.dataset.sort === board.key || (board.key === "select" && th.dataset.sort === ":select");
        th.classList.toggle("sorted", on);
        th.setAttribute("aria-sort", on ? (board.dir > 0 ? "ascending" : "descending") : "none");
      }
      count.textContent = `${shown.length} of ${rows.filter((m) => board.intermediates || m.state !== "intermediate").length} members`;
    }
    draw();
    return el("section", { id: "leaderboard" },
      el("h2", { text: "Leaderboard" }),
      el("p", { class: "muted", text: `Ranked by weighted select fitness; click any header to sort. ± is one standard error over the split's documents${anchorText("select")}. gap = report − select: a negative gap is fitness that did not carry over to held-out documents (selection overfitting its own yardstick).${RUN.shared_fitness ? " Shared fitness (M2N2's resource competition, what this run selects by) splits each document among the alive members that solve it." : ""}` }),
      filters, el("div", { class: "table-scroll" }, table));
  }

  function gapCell(v) {
    const cls = v === null ? "num gap" : v < -1e-9 ? "num gap neg" : v > 1e-9 ? "num gap pos" : "num gap";
    return el("td", { class: cls, text: fmtGap(v) });
  }

  // ------------------------------------------------------------------ the best member against its seeds and parents

  function pct(v) {
    return v === null || v === undefined ? "–" : `${Math.round(v * 100)}%`;
  }

  function pairedSection() {
    const best = RUN.best === null ? null : BY_ID.get(RUN.best);
    if (!best || !DATA.paired.length) return null;
    let split = "report";
    const title = el("h2");
    const holder = el("div", { class: "table-scroll" });
    const VERDICT = { "A better": ["better", "pos"], "B better": ["worse", "neg"], "within noise": ["within noise", ""] };
    function draw() {
      title.textContent = `Best member vs its seeds and parents (paired, ${split} split)`;
      const head = ["member", "relation", "best − member", "95% interval", "documents", "best wins / member wins / ties", "verdict"];
      holder.replaceChildren(el("table", { class: "mini paired" },
        el("thead", {}, el("tr", {}, head.map((h, i) => el("th", { class: i >= 2 && i <= 4 ? "num" : null, text: h })))),
        el("tbody", {}, DATA.paired.filter((e) => e.split === split).map((e) => {
          const [word, cls] = e.paired ? VERDICT[e.verdict] : [e.diff === null ? `not scored on the ${split} split` : "not paired: no per-document outcomes", "muted"];
          return el("tr", { "data-id": e.other, "data-split": e.split },
            el("td", {}, memberButton(e.other)), el("td", { text: e.relation }),
            gapCell(e.diff),
            el("td", { class: "num interval", text: e.paired ? `[${fmtGap(e.low)}, ${fmtGap(e.high)}]` : "–" }),
            el("td", { class: "num", text: e.docs ?? "–" }),
            el("td", { class: "num", text: e.paired ? `${pct(e.a_wins)} / ${pct(e.b_wins)} / ${pct(e.ties)}` : "–" }),
            el("td", { class: `verdict ${cls}`.trim(), text: word }));
        }))));
    }
    const picker = el("span", { class: "seg" }, ["report", "select"].map((s) => el("button", {
      type: "button", class: s === split ? "active" : null, "data-split": s, text: s,
      onclick: (ev) => { split = s; for (const b of ev.target.parentNode.children) b.classList.toggle("active", b === ev.target); draw(); },
    })));
    draw();
    return el("section", { id: "paired" }, title,
      el("p", { class: "muted" }, "The best member by select, ", memberButton(best.id),
        `, against each seed and each of its parents: the difference of the weighted scores on the documents both were scored on, its 95% interval (paired bootstrap over documents), and the share of documents each side does better on. Within noise: the interval contains 0. Held-out report documents first; select documents are the ones selection saw.`),
      el("div", { class: "toolbar" }, el("span", { class: "legend-item" }, "split ", picker)),
      holder);
  }

  // ------------------------------------------------------------------ charts

  function fitnessSection() {
    const holder = el("div", { class: "chart-holder" });
    let split = "select";
    const gens = DATA.generations;
    function draw() {
      const stat = (k) => gens.filter((g) => g[split]).map((g) => ({ x: g.generation, y: g[split][k], title: `generation ${g.generation} ${k}: ${fmt(g[split][k])}` }));
      const born = [];
      for (const g of gens) {
        g.born.forEach((id, i) => {
          const m = BY_ID.get(id);
          if (m[split] === null) return;
          const jitter = g.born.length > 1 ? (i / (g.born.length - 1) - 0.5) * 0.24 : 0;
          born.push({ x: g.generation + jitter, y: m[split], ey: m[`${split}_se`], color: opColor(m.operator), title: `${m.name} (${m.operator}): ${split} ${fmtPm(m[split], m[`${split}_se`])}` });
        });
      }
      holder.replaceChildren(chart({
        width: 560, height: 300, integerX: true, xLabel: "generation", yLabel: `${split} fitness`,
        series: [
          { label: "best", color: "#1a7f37", points: stat("best"), line: true, radius: 2.5, width: 2.5 },
          { label: "median", color: "#0b5cad", points: stat("median"), line: true, radius: 2.5, dash: "6 4" },
          { label: "worst", color: "#b42318", points: stat("worst"), line: true, radius: 2.5, dash: "2 3" },
          { label: "members born in the generation", color: "#9ca3af", points: born, radius: 4.5, opacity: 0.85 },
        ],
        caption: "Lines: the population after each generation's survivor selection (generation 0: the seeds). Dots: the members born in that generation, coloured by operator, with ±1 standard error over documents.",
      }));
    }
    const picker = el("span", { class: "seg" }, ["select", "report"].map((s) => el("button", {
      type: "button", class: s === split ? "active" : null, text: s,
      onclick: (ev) => { split = s; for (const b of ev.target.parentNode.children) b.classList.toggle("active", b === ev.target); draw(); },
    })));
    draw();

    const contenders = MEMBERS.filter((m) => m.state !== "intermediate" && m.select !== null && m.report !== null);
    const both = extent(contenders.flatMap((m) => [m.select - (m.select_se || 0), m.select + (m.select_se || 0), m.report - (m.report_se || 0), m.report + (m.report_se || 0)]));
    const pad = both ? Math.max(0.02, (both[1] - both[0]) * 0.08) : 0.05;
    const domain = both ? [both[0] - pad, both[1] + pad] : [0, 1];
    const scatter = chart({
      width: 420, height: 300, xLabel: "select fitness", yLabel: "report fitness", xDomain: domain, yDomain: domain, diagonal: true,
      series: [...new Set(contenders.map((m) => m.operator))].map((op) => ({
        label: op, color: opColor(op), radius: 5,
        points: contenders.filter((m) => m.operator === op).map((m) => ({ x: m.select, y: m.report, ex: m.select_se, ey: m.report_se, ring: m.state === "alive", title: `${m.name}: select ${fmtPm(m.select, m.select_se)}, report ${fmtPm(m.report, m.report_se)}, gap ${fmtGap(gap(m.select, m.report))}` })),
      })),
      caption: "Below the diagonal: better on the documents selection saw than on held-out ones. Ringed: alive. Bars: ±1 standard error over documents.",
    });
    return el("section", { id: "fitness" },
      el("h2", { text: "Fitness over generations" }),
      el("div", { class: "toolbar" }, el("span", { class: "legend-item" }, "split ", picker)),
      el("div", { class: "chart-row" }, holder, scatter));
  }

  // ------------------------------------------------------------------ Pareto fronts

  function frontsSection() {
    const tasks = RUN.tasks.map((t) => t.task);
    if (tasks.length < 2) return null;
    const row = el("div", { class: "chart-row" }, ["select", "report"].map((which) =>
      tasks.length === 2 ? frontScatter(which, tasks) : frontParallel(which, tasks)));
    return el("section", { id: "pareto" },
      el("h2", { text: "Pareto fronts over the tasks" }),
      el("p", { class: "muted", text: "A split's front: the members no other member beats on every task. The select front is what NSGA-II selection sees; the report front is the same on held-out documents, so a select-front member off the report front was picked by documents that did not carry over." }),
      row, frontTable(tasks));
  }

  function contenders(which, tasks) {
    return MEMBERS.filter((m) => m.state !== "intermediate" && m.state !== "failed" && tasks.every((t) => m.tasks[t][which] !== null));
  }

  function frontTitle(m, which, tasks) {
    const scores = tasks.map((t) => `${t} ${fmtPm(m.tasks[t][which], m.tasks[t][`${which}_se`])}`).join(", ");
    return `${m.name} (${m.operator}), ${which} front ${m.front[which] ?? "–"}: ${scores}; held-out gap ${fmtGap(gap(m.select, m.report))}`;
  }

  function frontScatter(which, tasks) {
    const all = contenders(which, tasks);
    const onFront = new Set(DATA.fronts[which]);
    const point = (m) => ({ x: m.tasks[tasks[0]][which], y: m.tasks[tasks[1]][which], ex: m.tasks[tasks[0]][`${which}_se`], ey: m.tasks[tasks[1]][`${which}_se`], color: opColor(m.operator), ring: m.state === "alive", title: frontTitle(m, which, tasks) });
    const front = all.filter((m) => onFront.has(m.id)).map(point).sort((a, b) => a.x - b.x || b.y - a.y);
    return chart({
      width: 420, height: 300, xLabel: `${tasks[0]} (${which})`, yLabel: `${tasks[1]} (${which})`,
      series: [
        { label: "other members", color: "#c7ccd4", points: all.filter((m) => !onFront.has(m.id)).map(point).map((q) => ({ ...q, color: null, ring: false })), radius: 4 },
        { label: `${which} front`, color: which === "select" ? "#0b5cad" : "#b45309", points: front, line: true, width: 2, dash: which === "report" ? "6 4" : null },
        { label: "front members, by operator", color: "#444444", points: front, radius: 6, legend: false },
      ],
      caption: `${which === "select" ? "Select" : "Report (held out)"} split. Ringed: alive. Bars: ±1 standard error. Hover a point for its scores and its held-out gap (report − select, weighted).`,
    });
  }

  function frontParallel(which, tasks) {
    const all = contenders(which, tasks);
    const onFront = new Set(DATA.fronts[which]);
    const W = 420, H = 300, M = { l: 30, r: 30, t: 24, b: 46 };
    const X = (i) => M.l + i * (W - M.l - M.r) / (tasks.length - 1);
    const ranges = tasks.map((t) => extent(all.map((m) => m.tasks[t][which])) || [0, 1]);
    const Y = (i, v) => { const [lo, hi] = ranges[i]; return H - M.b - (hi - lo < 1e-12 ? 0.5 : (v - lo) / (hi - lo)) * (H - M.t - M.b); };
    const root = sv("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" }, svgTitle(`${which} front, parallel coordinates`));
    const grid = sv("g", { class: "grid" });
    tasks.forEach((t, i) => {
      grid.appendChild(sv("line", { class: "axis", x1: X(i), x2: X(i), y1: M.t, y2: H - M.b }));
      grid.appendChild(sv("text", { x: X(i), y: H - M.b + 16, "text-anchor": "middle", text: truncate(t, 18) }));
      grid.appendChild(sv("text", { x: X(i), y: M.t - 8, "text-anchor": "middle", text: fmt(ranges[i][1], 3) }));
      grid.appendChild(sv("text", { x: X(i), y: H - M.b + 30, "text-anchor": "middle", text: fmt(ranges[i][0], 3) }));
    });
    root.appendChild(grid);
    const ordered = [...all.filter((m) => !onFront.has(m.id)), ...all.filter((m) => onFront.has(m.id))];
    for (const m of ordered) {
      const d = tasks.map((t, i) => `${i ? "L" : "M"}${X(i)},${Y(i, m.tasks[t][which])}`).join("");
      const front = onFront.has(m.id);
      root.appendChild(sv("path", { d, fill: "none", stroke: front ? opColor(m.operator) : "#c7ccd4", "stroke-width": front ? 2.5 : 1, class: front ? "front-line" : null }, svgTitle(frontTitle(m, which, tasks))));
    }
    return el("figure", { class: "chart-wrap" }, root,
      el("figcaption", { class: "caption", text: `${which === "select" ? "Select" : "Report (held out)"} split: one axis per task (its lowest to highest score); coloured lines are the front's members, by operator.` }));
  }

  function frontTable(tasks) {
    const front = new Set(DATA.fronts.select);
    const members = MEMBERS.filter((m) => front.has(m.id));
    if (!members.length) return el("p", { class: "muted", text: "No member is scored on every task of the select split yet." });
    const head = ["member", "operator", "state", ...tasks.flatMap((t) => [`${t} select`, `${t} report`]), "held-out gap", "report front"];
    return el("table", { class: "mini fronts" },
      el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))),
      el("tbody", {}, members.map((m) => el("tr", { "data-id": m.id },
        el("td", {}, memberButton(m.id)), el("td", { text: m.operator }), el("td", { text: m.state }),
        tasks.flatMap((t) => [numCell(m.tasks[t].select, m.tasks[t].select_se), numCell(m.tasks[t].report, m.tasks[t].report_se)]),
        gapCell(gap(m.select, m.report)),
        el("td", { text: m.front.report === null ? "–" : m.front.report === 1 ? "yes" : `no (front ${m.front.report})` })))));
  }

  function cmaSection() {
    const xs = DATA.crossovers;
    if (!xs.length && !RUN.crossover) return null;
    const section = el("section", { id: "cma" }, el("h2", { text: "CMA-ES convergence, one panel per crossover" }));
    if (!xs.length) {
      section.appendChild(el("p", { class: "muted", text: "This run has no crossovers." }));
      return section;
    }
    section.appendChild(el("p", { class: "muted", text: "Each dot is one merge CMA-ES proposed and scored on the select split, in the order scored; the line is the best so far. The ringed dot became the child." }));
    const grid = el("div", { class: "panels" });
    for (const x of xs) {
      const child = x.child === null ? null : BY_ID.get(x.child);
      const chosen = child && child.params ? child.params.candidate : null;
      let best = null;
      const dots = [], line = [];
      x.candidates.forEach((c, i) => {
        if (c.score === null) return;
        best = best === null ? c.score : Math.max(best, c.score);
        dots.push({ x: i + 1, y: c.score, ring: c.id === chosen, title: `iteration ${c.iteration}, proposal ${c.idx}: ${fmt(c.score)}\n${JSON.stringify(c.params)}` });
        line.push({ x: i + 1, y: best });
      });
      const color = opColor(x.method || "linear");
      const sig = x.sigma.filter((s) => s !== null);
      const name = child ? child.name : `generation ${x.generation} slot ${x.slot} (in progress)`;
      const parents = x.parents.map((p) => BY_ID.get(p).name).join(" × ");
      grid.appendChild(el("div", { class: "panel" },
        el("div", { class: "panel-title" }, child ? memberButton(child.id) : el("span", { text: name }), el("span", { class: "muted", text: ` ← ${parents}` })),
        el("div", { class: "panel-note muted", text: `${dots.length} merges, best ${fmt(best)}` + (sig.length ? ` · σ ${sig[0].toFixed(3)} → ${sig[sig.length - 1].toFixed(3)}` : "") }),
        chart({
          width: 300, height: 170, integerX: true, yTickCount: 4,
          series: [
            { label: "proposal", color: "#9ca3af", points: dots, radius: 3.5, legend: false },
            { label: "best so far", color, points: line, line: true, step: true, width: 2, legend: false },
          ],
          xTickFormat: (t) => String(t),
        })));
    }
    section.appendChild(grid);
    return section;
  }

  function esSection() {
    const es = DATA.mutations.filter((m) => m.rewards.length);  // operators with a reward curve (noise ES)
    if (!es.length) return null;
    const grid = el("div", { class: "panels" });
    for (const mu of es) {
      const child = mu.child === null ? null : BY_ID.get(mu.child);
      const parent = BY_ID.get(mu.parent);
      const reward = mu.operator.reward || {};
      grid.appendChild(el("div", { class: "panel" },
        el("div", { class: "panel-title" }, child ? memberButton(child.id) : el("span", { text: `generation ${mu.generation} slot ${mu.slot} (in progress)` }), el("span", { class: "muted", text: ` ← ${parent ? parent.name : "?"}` })),
        el("div", { class: "panel-note muted", text: `${mu.kind}: ${mu.rewards.length} iterations${mu.operator.pairs ? ` × ${mu.operator.pairs} pairs` : ""} · ${reward.kind || ""} reward` }),
        chart({
          width: 300, height: 170, integerX: true, yTickCount: 4,
          series: [
            { label: "best pair member", color: "#f0b27a", points: mu.rewards.map((r) => ({ x: r.iteration, y: r.best })), line: true, width: 1, dash: "3 3", legend: false },
            { label: "worst pair member", color: "#f0b27a", points: mu.rewards.map((r) => ({ x: r.iteration, y: r.worst })), line: true, width: 1, dash: "3 3", legend: false },
            { label: "mean reward", color: opColor(mu.kind), points: mu.rewards.map((r) => ({ x: r.iteration, y: r.mean, title: `iteration ${r.iteration}: mean ${fmt(r.mean)}` })), line: true, radius: 2.5, width: 2, legend: false },
          ],
        })));
    }
    return el("section", { id: "es" },
      el("h2", { text: "ES mutations, one panel per mutant" }),
      el("p", { class: "muted", text: "Mean reward of the antithetic pairs per iteration (solid) between the best and worst perturbation (dashed)." }),
      grid);
  }

  // ------------------------------------------------------------------ page

  const app = document.getElementById("app");
  app.appendChild(header());
  app.appendChild(tree());
  if (treeSvg) {
    paintNodes();
    fitTree();
    window.addEventListener("resize", fitTree);
  }
  app.appendChild(leaderboard());
  const vs = pairedSection();
  if (vs) app.appendChild(vs);
  app.appendChild(fitnessSection());
  for (const section of [frontsSection(), pathsSection(), cmaSection(), esSection()]) if (section) app.appendChild(section);
  app.appendChild(el("footer", { class: "muted", text: `evomerge report of ${RUN.dir}. Self-contained: no network, no external files.` }));
  if (RUN.best !== null) select(RUN.best);
})();
