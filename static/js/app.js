/* PromptProxy dashboard: the only script (no inline scripts, so the CSP can forbid them). */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Every HTMX request carries the CSRF token, even from elements outside <body hx-headers>.
  document.addEventListener("htmx:configRequest", function (event) {
    if (!event.detail.headers["X-CSRFToken"]) {
      event.detail.headers["X-CSRFToken"] = csrfToken();
    }
  });

  // A dashboard session that ended answers HTMX with 401 + HX-Redirect; htmx follows it.
  function copyButtons(root) {
    root.querySelectorAll("[data-copy]").forEach(function (button) {
      if (button.dataset.bound) { return; }
      button.dataset.bound = "1";
      button.addEventListener("click", function () {
        var input = document.querySelector(button.getAttribute("data-copy"));
        var status = button.parentElement.querySelector(".copied");
        var done = function () { if (status) { status.textContent = "Copied."; } };
        input.select();
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(input.value).then(done, function () {
            document.execCommand("copy"); done();
          });
        } else {
          document.execCommand("copy");
          done();
        }
      });
    });
  }

  var palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"];

  function shortLabel(iso, hourly) {
    var d = new Date(iso);
    var opts = hourly ? { hour: "2-digit", minute: "2-digit", day: "numeric", month: "short" } : { day: "numeric", month: "short" };
    return d.toLocaleString(undefined, opts);
  }

  function drawCharts(root) {
    if (!window.Chart) { return; }
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (window.Chart.getChart(canvas)) { return; }
      var spec = JSON.parse(canvas.getAttribute("data-chart"));
      var labels = spec.labels;
      var hourly = labels.length > 1 && (new Date(labels[1]) - new Date(labels[0])) < 86400000;
      new window.Chart(canvas, {
        type: spec.type,
        data: {
          labels: labels.map(function (l) { return shortLabel(l, hourly); }),
          datasets: spec.series.map(function (s, i) {
            return {
              label: s[0],
              data: spec.percent ? s[1].map(function (v) { return v === null ? null : v * 100; }) : s[1],
              backgroundColor: palette[i % palette.length],
              borderColor: palette[i % palette.length],
              spanGaps: true, tension: 0.2, pointRadius: 2
            };
          })
        },
        options: {
          responsive: true, maintainAspectRatio: false, animation: false,
          interaction: { mode: "index", intersect: false },
          scales: { y: { beginAtZero: true } },
          plugins: { legend: { display: spec.series.length > 1 } }
        }
      });
    });
  }

  function init(root) {
    copyButtons(root);
    drawCharts(root);
  }

  if (window.htmx) {
    window.htmx.onLoad(init);
  } else {
    document.addEventListener("DOMContentLoaded", function () { init(document); });
  }
})();
