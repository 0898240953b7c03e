// The live page of active runs: every few seconds the table's cells are updated from /api/active
// (JSON), without reloading the page. Text only goes in through textContent: nothing the server
// sends is ever parsed as HTML.
"use strict";

(function () {
  const table = document.getElementById("active-runs");
  if (!table) {
    return;
  }
  const api = table.dataset.api;
  const interval = Number(table.dataset.refreshMs) || 2000;
  const status = document.getElementById("active-status");
  const empty = document.getElementById("no-active");
  const fields = ["sweep", "run", "state", "progress", "eta", "heartbeat", "job_id", "node", "reason"];

  function keyOf(sweep, run) {
    return JSON.stringify([sweep, run]);
  }

  function newRow() {
    const row = document.createElement("tr");
    for (const field of fields) {
      const cell = document.createElement("td");
      cell.dataset.field = field;
      if (field === "run") {
        cell.className = "id";
        cell.appendChild(document.createElement("a"));
      }
      if (field === "progress" || field === "eta") {
        cell.className = "number";
      }
      row.appendChild(cell);
    }
    return row;
  }

  function fill(row, run) {
    row.dataset.sweep = run.sweep;
    row.dataset.run = run.run;
    for (const cell of row.cells) {
      const field = cell.dataset.field;
      if (field === "run") {
        const link = cell.querySelector("a");
        link.textContent = run.run;
        link.setAttribute("href", run.url);
      } else if (field in run) {
        const text = String(run[field]);
        if (cell.textContent !== text) {
          cell.textContent = text;
        }
      }
    }
  }

  function render(runs) {
    const body = table.tBodies[0];
    const existing = new Map();
    for (const row of Array.from(body.rows)) {
      existing.set(keyOf(row.dataset.sweep, row.dataset.run), row);
    }
    const rows = runs.map(function (run) {
      const row = existing.get(keyOf(run.sweep, run.run)) || newRow();
      fill(row, run);
      return row;
    });
    const same = rows.length === body.rows.length && rows.every((row, index) => body.rows[index] === row);
    if (!same) {
      body.replaceChildren(...rows);
    }
    if (empty) {
      empty.hidden = rows.length > 0;
    }
  }

  async function refresh() {
    try {
      const response = await fetch(api, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      const document_ = await response.json();
      render(document_.runs);
      status.textContent = "updated " + new Date().toLocaleTimeString() + ", every " + interval / 1000 + " s";
    } catch (error) {
      status.textContent = "could not update: " + error.message;
    } finally {
      window.setTimeout(refresh, interval);
    }
  }

  window.setTimeout(refresh, interval);
})();
