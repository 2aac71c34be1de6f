// cvit-bench leaderboard: sort (numeric-aware, aria-sort), filter by family / base model / tier, search.
// No network, no eval, no innerHTML: the script only reorders rows and toggles `hidden`.
"use strict";
(function () {
  function sortValue(cell) {
    if (!cell) return { empty: true };
    var raw = cell.getAttribute("data-sort");
    if (raw !== null) {
      if (raw === "") return { empty: true };
      var n = parseFloat(raw);
      if (!isNaN(n)) return { num: n };
    }
    var text = cell.getAttribute("data-sort-text");
    if (text === null) text = cell.textContent;
    text = text.trim();
    if (text === "" || text === "—") return { empty: true };
    return { text: text };
  }

  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function compare(a, b) {
    // empty values sort last whatever the direction (handled by the caller); numbers before text
    if (a.num !== undefined && b.num !== undefined) return a.num - b.num;
    if (a.num !== undefined) return -1;
    if (b.num !== undefined) return 1;
    return collator.compare(a.text, b.text);
  }

  function sortTable(table, th) {
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var index = headers.indexOf(th);
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    headers.forEach(function (h) { if (h.hasAttribute("aria-sort")) h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", dir);
    var sign = dir === "ascending" ? 1 : -1;
    Array.prototype.forEach.call(table.tBodies, function (tbody) {
      var rows = Array.prototype.filter.call(tbody.rows, function (r) { return r.classList.contains("entry"); });
      rows.sort(function (ra, rb) {
        var a = sortValue(ra.cells[index]), b = sortValue(rb.cells[index]);
        if (a.empty && b.empty) return 0;
        if (a.empty) return 1;
        if (b.empty) return -1;
        return sign * compare(a, b);
      });
      rows.forEach(function (r) { tbody.appendChild(r); });   // each tier keeps its own section
    });
  }

  function applyFilters() {
    var q = (document.getElementById("search").value || "").trim().toLowerCase();
    var family = document.getElementById("filter-family").value;
    var base = document.getElementById("filter-base").value;
    var tier = document.getElementById("filter-tier").value;
    var shown = 0;
    document.querySelectorAll("section.board").forEach(function (section) {
      var visible = 0;
      section.querySelectorAll("tr.entry").forEach(function (row) {
        var ok = (!family || row.getAttribute("data-family") === family) &&
                 (!base || row.getAttribute("data-base") === base) &&
                 (!tier || row.getAttribute("data-tier") === tier) &&
                 (!q || row.textContent.toLowerCase().indexOf(q) !== -1 ||
                  section.querySelector("h2").textContent.toLowerCase().indexOf(q) !== -1);
        row.hidden = !ok;
        if (ok) visible += 1;
      });
      section.querySelectorAll("tbody").forEach(function (tbody) {
        tbody.hidden = !tbody.querySelector("tr.entry:not([hidden])");
      });
      section.hidden = visible === 0;
      shown += visible;
    });
    var out = document.getElementById("shown-count");
    if (out) out.textContent = shown + " shown";
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.board").forEach(function (table) {
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
        if (!th.hasAttribute("aria-sort")) return;
        th.tabIndex = 0;
        th.addEventListener("click", function () { sortTable(table, th); });
        th.addEventListener("keydown", function (e) {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(table, th); }
        });
      });
    });
    var form = document.getElementById("filters");
    if (form) {
      form.addEventListener("submit", function (e) { e.preventDefault(); });
      ["search", "filter-family", "filter-base", "filter-tier"].forEach(function (id) {
        var el = document.getElementById(id);
        el.addEventListener("input", applyFilters);
        el.addEventListener("change", applyFilters);
      });
      applyFilters();
    }
  });
})();
