// Draws every <canvas data-chart-src> of the page with the vendored Chart.js, from the same JSON the page's
// "Show the numbers" table was rendered from (attest/charts.py): the page's embedded copy
// (<script type="application/json" id=data-chart-json>), or GET data-chart-src when the page has none. No inline styles: sizes are set through
// the CSSOM, which the CSP allows.
(function () {
  "use strict";
  if (typeof Chart === "undefined") { return; }

  var COLOURS = {
    approve: "#198754", revoke: "#dc3545", abstain: "#6c757d", open: "#adb5bd",
    decided: "#0d6efd", total: "#6c757d",
    terminated: "#dc3545", orphaned: "#fd7e14", privileged: "#6f42c1", none: "#20c997",
    remediations: "#0d6efd", last: "#0d6efd", median: "#20c997", longest: "#fd7e14"
  };
  var FALLBACK = ["#0d6efd", "#20c997", "#fd7e14", "#6f42c1", "#dc3545", "#6c757d"];

  function config(chart) {
    var line = chart.type === "line";
    var datasets = chart.series.map(function (s, i) {
      var colour = COLOURS[s.key] || FALLBACK[i % FALLBACK.length];
      var set = { label: s.label, data: s.data, backgroundColor: colour, borderColor: colour, maxBarThickness: 48 };
      if (line) {
        set.fill = false;
        set.pointRadius = chart.labels.length > 40 ? 0 : (chart.labels.length < 3 ? 4 : 2);
        if (s.key === "total") { set.borderDash = [6, 4]; set.pointRadius = 0; }
      }
      return set;
    });
    var valueAxis = { beginAtZero: true, stacked: chart.stacked, title: { display: true, text: chart.unit },
                      ticks: chart.unit === "seconds" ? {} : { precision: 0 } };  // counts: whole numbers only
    var labelAxis = { stacked: chart.stacked };
    return {
      type: line ? "line" : "bar",
      data: { labels: chart.labels, datasets: datasets },
      options: {
        indexAxis: chart.horizontal ? "y" : "x",
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: chart.horizontal ? { x: valueAxis, y: labelAxis } : { x: labelAxis, y: valueAxis },
        plugins: { legend: { display: chart.series.length > 1, position: "bottom" } }
      },
      plugins: [{
        id: "attestDrawn",
        afterRender: function (c) { c.canvas.setAttribute("data-chart-drawn", "true"); }
      }]
    };
  }

  function size(box, chart) {
    var rows = chart.labels.length;
    var height = chart.horizontal ? Math.max(140, rows * 26 + 70) : 260;
    box.style.position = "relative";
    box.style.height = height + "px";
  }

  function draw(canvas) {
    if (canvas.getAttribute("data-chart-state")) { return; }
    canvas.setAttribute("data-chart-state", "loading");
    // the page's own copy of the chart's JSON (a data block, which the CSP does not run); else the endpoint
    var block = document.getElementById(canvas.getAttribute("data-chart-json") || "");
    var data = block
      ? Promise.resolve().then(function () { return JSON.parse(block.textContent); })
      : fetch(canvas.getAttribute("data-chart-src"), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        });
    data
      .then(function (chart) {
        size(canvas.parentNode, chart);
        new Chart(canvas, config(chart));
        canvas.setAttribute("data-chart-state", "drawn");
      })
      .catch(function () {
        // the table under the chart still has every number
        canvas.setAttribute("data-chart-state", "failed");
        canvas.parentNode.hidden = true;
      });
  }

  function drawAll(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll("canvas[data-chart-src]"), draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  } else {
    drawAll(document);
  }
  document.addEventListener("htmx:afterSettle", function (event) { drawAll(event.target); });

  // printed, every chart's numbers show under it (closed <details> would print as their summary only)
  var opened = [];
  window.addEventListener("beforeprint", function () {
    opened = Array.prototype.filter.call(document.querySelectorAll("figure.chart details:not([open])"), function (d) {
      d.open = true;
      return true;
    });
  });
  window.addEventListener("afterprint", function () {
    opened.forEach(function (d) { d.open = false; });
    opened = [];
  });
})();
