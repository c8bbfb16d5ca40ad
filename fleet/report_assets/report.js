// Draws the charts of a fleet report (fleet/report.py) from the JSON the page
// carries, with Observable Plot (inlined before this script). Each chart's
// text alternative is already on the page: an ARIA label and description set
// here on the SVG, and its data as a table beside it.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("fleet-data").textContent);
  const colors = {
    applied: "#1f5fa8", "no-op": "#56606b", quarantined: "#b3261e", held: "#8a5100", conflicts: "#8a5100",
    input: "#1f5fa8", output: "#8a5100", "cache read": "#2e6b30", "cache write": "#6a3d9a",
    pending: "#56606b", "in-progress": "#1f5fa8", done: "#2e6b30", failed: "#b3261e",
    created: "#1f5fa8", delivered: "#2e6b30", "with errors": "#8a5100", "quarantined only": "#b3261e",
  };
  const scale = (domain) => ({domain, range: domain.map((d) => colors[d]), legend: true});
  const ticks = data.ticks.map((t) => t.tick);
  // At most about 12 labelled ticks on an axis, all whole numbers.
  const tickLabels = (values) => {
    const step = Math.max(1, Math.ceil(values.length / 12));
    return values.filter((_, i) => i % step === 0);
  };
  const long = (rows, key, kinds) => rows.flatMap((r) => kinds.map(([kind, field]) => ({[key]: r[key], kind, n: r[field]})));
  // A zero maximum would give a scale of [0, 0] and bars across the whole chart.
  const top = (rows, key, field) => Math.max(1, d3.max(d3.rollup(rows, (v) => d3.sum(v, (d) => d[field]), (d) => d[key]).values()) || 0);
  // A count's axis: whole numbers only.
  const counts = (label, max) => ({label, grid: true, nice: true, domain: [0, max], ticks: Math.min(8, max)});
  const tickX = {label: "tick", ticks: tickLabels(ticks), domain: ticks, type: "band", padding: 0.1};
  const stacked = (kinds, y) => {
    const rows = long(data.ticks, "tick", kinds);
    return {
      x: tickX, y: counts(y, top(rows, "tick", "n")), marginLeft: 64,
      color: scale(kinds.map(([k]) => k)),
      marks: [Plot.barY(rows, {x: "tick", y: "n", fill: "kind", tip: true}), Plot.ruleY([0])],
    };
  };
  const charts = {
    deltas: () => stacked([["applied", "applied"], ["no-op", "noop"], ["held", "held"], ["quarantined", "quarantined"]], "deltas"),
    conflicts: () => ({
      x: tickX, marginLeft: 64, color: scale(["conflicts"]),
      y: counts("conflicts", Math.max(1, d3.max(data.ticks, (t) => Math.max(t.conflicts, t.open_conflicts)) || 0)),
      marks: [
        Plot.barY(data.ticks, {x: "tick", y: "conflicts", fill: () => "conflicts", tip: true}),
        Plot.lineY(data.ticks, {x: "tick", y: "open_conflicts", stroke: "#1a1a1a", strokeWidth: 2, marker: "circle"}),
        Plot.ruleY([0]),
      ],
    }),
    quarantines: () => stacked([["quarantined", "quarantined"]], "quarantined deltas"),
    tokens: () => stacked([["input", "input_tokens"], ["output", "output_tokens"], ["cache read", "cache_read_input_tokens"],
      ["cache write", "cache_creation_input_tokens"]], "tokens"),
    cost: () => ({
      x: tickX, marginLeft: 64, y: {label: "US dollars", grid: true, nice: true, domain: [0, d3.max(data.ticks, (t) => t.cost_usd) || 0.01]},
      marks: [Plot.barY(data.ticks, {x: "tick", y: "cost_usd", fill: colors.applied, tip: true}), Plot.ruleY([0])],
    }),
    agents: () => {
      const shown = new Set(data.agents_shown);
      const rows = data.agent_ticks.filter((r) => shown.has(r.agent));
      return {
        x: tickX, y: {label: null, domain: data.agents_shown}, marginLeft: 110,
        color: {type: "linear", range: ["#6d94c5", "#08306b"], legend: true, label: "ops applied"},
        marks: [Plot.cell(rows, {x: "tick", y: "agent", fill: "ops", inset: 0.5, tip: true})],
      };
    },
    workers: () => {
      const rows = data.worker_ticks.map((r) => ({...r, status: r.errors ? "with errors" : r.deltas ? "delivered" : "quarantined only"}));
      return {
        x: tickX, y: {label: null}, marginLeft: 110,
        color: scale(["delivered", "with errors", "quarantined only"]),
        marks: [Plot.cell(rows, {x: "tick", y: "worker", fill: "status", inset: 0.5, tip: true})],
      };
    },
    tasks: () => {
      const states = ["pending", "in-progress", "done", "failed"];
      return {
        x: counts("tasks", Math.max(1, ...states.map((s) => data.tasks[s]))),
        y: {label: null, domain: states}, marginLeft: 90, color: scale(states),
        marks: [Plot.barX(states.map((s) => ({state: s, n: data.tasks[s]})), {x: "n", y: "state", fill: "state", tip: true}),
          Plot.ruleX([0])],
      };
    },
    throughput: () => {
      const kinds = [["created", "created"], ["done", "done"], ["failed", "failed"]];
      const rows = long(data.throughput, "bucket", kinds);
      return {
        x: {axis: null, domain: kinds.map(([k]) => k), padding: 0.1},
        fx: {label: `UTC ${data.bucket}`, ticks: tickLabels(data.throughput.map((r) => r.bucket))},
        y: counts("tasks", Math.max(1, d3.max(rows, (r) => r.n) || 0)),
        color: scale(kinds.map(([k]) => k)), marginLeft: 64,
        marks: [Plot.barY(rows, {x: "kind", fx: "bucket", y: "n", fill: "kind", tip: true}), Plot.ruleY([0])],
      };
    },
  };
  for (const figure of document.querySelectorAll("figure[data-chart]")) {
    const target = figure.querySelector(".plot");
    const options = charts[figure.dataset.chart]();
    const svg = Plot.plot({
      ...options, width: Math.max(320, Math.min(960, target.clientWidth || 960)), height: figure.dataset.height ? +figure.dataset.height : 260,
      ariaLabel: figure.dataset.label, ariaDescription: target.dataset.description,
      style: {fontSize: "13px", color: "#1a1a1a", background: "#ffffff"},
    });
    // One image with a label and a description for assistive technology; the
    // table beside it holds the numbers.
    const chart = svg.tagName.toLowerCase() === "svg" ? svg : svg.querySelector("svg:last-of-type");
    if (chart) {
      chart.setAttribute("role", "img");
      chart.setAttribute("aria-label", figure.dataset.label);
      chart.setAttribute("aria-description", target.dataset.description);
    }
    target.replaceChildren(svg);
    target.removeAttribute("data-pending");
  }
  document.documentElement.dataset.rendered = "true";
})();
