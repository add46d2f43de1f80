// The run page (templates/runs/run_detail.html): a static file, so the Content-Security-Policy allows no inline script.
(function () {
  // Poll the progress endpoint while the run is open; reload once when failures appear or the run ends,
  // so that failure reasons, retry buttons and previews are rendered by the server.
  var table = document.getElementById("progress");
  var open = { pending: true, running: true };
  if (!open[table.dataset.status]) return;
  var lastFailed = Number(table.dataset.failed || 0);
  function update(data) {
    document.getElementById("run-status").textContent = data.status;
    document.getElementById("run-status").className = "run-status " + data.status;
    document.getElementById("run-done").textContent = data.progress.done || 0;
    document.getElementById("run-total").textContent = data.progress.total || 0;
    data.models.forEach(function (m) {
      var row = table.querySelector('tr[data-model="' + m.model_id + '"]');
      if (!row) return;
      row.querySelector(".done").textContent = m.done;
      row.querySelector(".total").textContent = m.total;
      row.querySelector(".failed").textContent = m.failed;
      row.querySelector(".bar span").style.width = m.percent + "%";
      row.querySelector(".bar").title = m.percent + "%";
      row.querySelector(".jobs").textContent = Object.keys(m.jobs).map(function (k) { return k + " " + m.jobs[k]; }).join(", ");
    });
    if (!open[data.status] || (data.progress.failed || 0) !== lastFailed) { window.location.reload(); return; }
    window.setTimeout(poll, 2000);
  }
  function poll() {
    fetch(table.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(update)
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 2000);
})();
