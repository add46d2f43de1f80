// Dashboards: small progressive enhancements for the server-drawn SVG charts. No external code.
(function () {
  "use strict";

  // Heat map: hovering a cell dims every cell outside its row and column.
  function linkHeatmap(svg) {
    var cells = Array.prototype.slice.call(svg.querySelectorAll("g.cell"));
    cells.forEach(function (cell) {
      cell.addEventListener("mouseenter", function () {
        var row = cell.getAttribute("data-row"), col = cell.getAttribute("data-col");
        cells.forEach(function (other) {
          var keep = other.getAttribute("data-row") === row || other.getAttribute("data-col") === col;
          other.classList.toggle("dim", !keep);
        });
      });
      cell.addEventListener("mouseleave", function () {
        cells.forEach(function (other) { other.classList.remove("dim"); });
      });
    });
  }

  // Selects marked data-autosubmit submit their form on change (the SD3 chart's model picker).
  function autosubmit(select) {
    select.addEventListener("change", function () { select.form.submit(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("svg.heatmap").forEach(linkHeatmap);
    document.querySelectorAll("select[data-autosubmit]").forEach(autosubmit);
  });
})();
