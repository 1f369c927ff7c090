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

  // Axis labels in 24-hour UTC, as the range header and the data tables show them (ISO labels end in Z).
  // Daily buckets show the date, hourly ones (24 h) the time, 6-hour ones (7 days) both.
  function shortLabel(iso, stepMs) {
    if (stepMs >= 86400000) { return iso.slice(5, 10); }
    if (stepMs > 3600000) { return iso.slice(5, 10) + " " + iso.slice(11, 16); }
    return iso.slice(11, 16);
  }

  // Dollars as people write them: never 6.00000E-5.
  function money(v) {
    if (v === null || v === undefined) { return ""; }
    if (v === 0 || Math.abs(v) >= 1) { return "$" + v.toFixed(2); }
    if (Math.abs(v) >= 0.01) { return "$" + v.toFixed(4); }
    return "$" + v.toFixed(1 - Math.floor(Math.log10(Math.abs(v))));
  }

  function drawCharts(root) {
    if (!window.Chart) { return; }
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (window.Chart.getChart(canvas)) { return; }
      var spec = JSON.parse(canvas.getAttribute("data-chart"));
      var labels = spec.labels;
      var step = labels.length > 1 ? new Date(labels[1]) - new Date(labels[0]) : 86400000;
      var format = spec.money ? money : function (v) { return spec.percent ? v.toFixed(1) + "%" : v; };
      new window.Chart(canvas, {
        type: spec.type,
        data: {
          labels: labels.map(function (l) { return shortLabel(l, step); }),
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
          scales: {
            x: { ticks: { maxRotation: 0, autoSkip: true, autoSkipPadding: 12 } },
            y: { beginAtZero: true, ticks: { callback: function (v) { return format(v); } } }
          },
          plugins: {
            legend: { display: spec.series.length > 1 },
            tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + format(c.parsed.y); } } }
          }
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

/* ==== prompt library: playground streaming (owned by promptproxy/admin/prompt_library.py) ==== */
(function () {
  "use strict";

  function token() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function showStats(stats) {
    document.querySelectorAll("#pg-stats [data-stat]").forEach(function (dd) {
      var value = stats[dd.getAttribute("data-stat")];
      if (value === null || value === undefined) { dd.textContent = "—"; return; }
      if (dd.getAttribute("data-stat") === "cost") { value = Number(value).toFixed(6); }
      else if (typeof value === "number" && !Number.isInteger(value)) { value = value.toFixed(1); }
      dd.textContent = String(value) + (dd.getAttribute("data-stat") === "output_tokens" && stats.estimated ? " (estimated)" : "");
    });
  }

  function bindPlayground(form) {
    if (form.dataset.bound) { return; }
    form.dataset.bound = "1";
    var out = document.getElementById("pg-answer");
    var err = document.getElementById("pg-error");

    function fail(message) { err.textContent = message; err.hidden = false; }

    // One SSE frame: OpenAI chunks (text via textContent, never HTML), an in-band error, or our stats event.
    function handle(frame) {
      var name = "message", data = "";
      frame.split("\n").forEach(function (line) {
        if (line.indexOf("event: ") === 0) { name = line.slice(7); }
        else if (line.indexOf("data: ") === 0) { data += line.slice(6); }
      });
      if (!data || data === "[DONE]") { return; }
      var obj;
      try { obj = JSON.parse(data); } catch (e) { return; }
      if (name === "stats") { showStats(obj); return; }
      if (obj.error) { fail(obj.error.message); return; }
      // The same rules as answer_text() in prompt_library.py: Responses, Anthropic and chat events.
      if (obj.type === "response.output_text.delta") { out.textContent += obj.delta; return; }
      if (obj.type === "response.failed") { fail(((obj.response || {}).error || {}).message || "failed"); return; }
      if (obj.type === "content_block_delta" && obj.delta && obj.delta.type === "text_delta") {
        out.textContent += obj.delta.text; return;
      }
      (obj.choices || []).forEach(function (choice) {
        if (choice.delta && typeof choice.delta.content === "string") { out.textContent += choice.delta.content; }
      });
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("button[type=submit]");
      var data = {};
      new FormData(form).forEach(function (value, key) { if (key !== "csrf_token") { data[key] = value; } });
      out.textContent = "";
      err.hidden = true;
      showStats({});
      button.disabled = true;
      out.setAttribute("aria-busy", "true");
      fetch(form.action, {
        method: "POST", credentials: "same-origin", body: JSON.stringify(data),
        headers: { "Content-Type": "application/json", "Accept": "text/event-stream", "X-CSRFToken": token() }
      }).then(function (resp) {
        if (!resp.ok) {
          return resp.json().then(function (body) {
            throw new Error(body && body.error ? body.error.message : "HTTP " + resp.status);
          }, function () { throw new Error("The request failed (HTTP " + resp.status + ")."); });
        }
        var reader = resp.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        function pump() {
          return reader.read().then(function (result) {
            if (result.done) { if (buffer) { handle(buffer); } return; }
            buffer += decoder.decode(result.value, { stream: true });
            var frames = buffer.split("\n\n");
            buffer = frames.pop();
            frames.forEach(handle);
            return pump();
          });
        }
        return pump();
      }).catch(function (e) { fail(e.message); }).then(function () {
        button.disabled = false;
        out.removeAttribute("aria-busy");
      });
    });
  }

  function init(root) {
    var form = (root.querySelector ? root : document).querySelector("#playground");
    if (!form && root.id === "playground") { form = root; }
    if (form) { bindPlayground(form); }
  }

  if (window.htmx) {
    window.htmx.onLoad(init);
  } else {
    document.addEventListener("DOMContentLoaded", function () { init(document); });
  }
})();
/* ==== end prompt library ==== */
