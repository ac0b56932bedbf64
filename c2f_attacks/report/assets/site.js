// The leaderboard of the results site: filters, sorting and row details, all kept in the URL
// fragment (#model=shapes-vgg16&attack=lrpc&sort=fooling_ratio&dir=desc&open=ID), so that a
// view can be bookmarked, shared, and opened directly by a test.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("board-data").textContent);
  var table = document.getElementById("board");
  var body = table.querySelector("tbody");
  var count = document.getElementById("board-count");

  function readState() {
    var state = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      if (!part) return;
      var i = part.indexOf("=");
      var key = decodeURIComponent(i < 0 ? part : part.slice(0, i));
      state[key] = i < 0 ? "" : decodeURIComponent(part.slice(i + 1));
    });
    return state;
  }

  function writeState(state) {
    var parts = Object.keys(state).filter(function (k) { return state[k] !== ""; })
      .map(function (k) { return encodeURIComponent(k) + "=" + encodeURIComponent(state[k]); });
    history.replaceState(null, "", parts.length ? "#" + parts.join("&") : location.pathname);
    render();
  }

  function update(key, value) {
    var state = readState();
    state[key] = value;
    writeState(state);
  }

  // One select per filter column, with the values the rows have.
  data.filters.forEach(function (key) {
    var select = document.getElementById("filter-" + key);
    var values = {};
    data.rows.forEach(function (row) { values[row.cells[key][0]] = true; });
    Object.keys(values).sort().forEach(function (value) {
      var option = document.createElement("option");
      option.value = value;
      option.textContent = value === "" ? "(none)" : value;
      select.appendChild(option);
    });
    select.addEventListener("change", function () { update(key, select.value); });
  });
  var search = document.getElementById("filter-q");
  search.addEventListener("input", function () { update("q", search.value); });

  // Header: click to sort by a column, again to reverse.
  var headRow = table.querySelector("thead tr");
  data.columns.forEach(function (column) {
    var th = document.createElement("th");
    th.textContent = column.header;
    th.dataset.key = column.key;
    if (column.numeric) th.className = "num";
    th.addEventListener("click", function () {
      var state = readState();
      var dir = state.sort === column.key && state.dir !== "desc" ? "desc" : "asc";
      state.sort = column.key;
      state.dir = dir;
      writeState(state);
    });
    headRow.appendChild(th);
  });

  function matches(row, state) {
    for (var i = 0; i < data.filters.length; i++) {
      var key = data.filters[i];
      if (state[key] !== undefined && state[key] !== "" && row.cells[key][0] !== state[key]) {
        return false;
      }
    }
    if (state.q) {
      var needle = state.q.toLowerCase();
      return data.columns.some(function (c) {
        return row.cells[c.key][0].toLowerCase().indexOf(needle) >= 0;
      });
    }
    return true;
  }

  function compare(key, dir) {
    var sign = dir === "desc" ? -1 : 1;
    return function (a, b) {
      var x = a.cells[key][1], y = b.cells[key][1];
      if (x === null && y === null) return a.order - b.order;
      if (x === null) return 1;  // missing values last, whichever the direction
      if (y === null) return -1;
      if (typeof x === "number" && typeof y === "number") {
        return x === y ? a.order - b.order : sign * (x < y ? -1 : 1);
      }
      var c = String(x).localeCompare(String(y));
      return c === 0 ? a.order - b.order : sign * c;
    };
  }

  function render() {
    var state = readState();
    var open = (state.open || "").split(",").filter(Boolean);
    data.filters.forEach(function (key) {
      document.getElementById("filter-" + key).value = state[key] || "";
    });
    if (document.activeElement !== search) search.value = state.q || "";
    var rows = data.rows.filter(function (row) { return matches(row, state); });
    if (state.sort && data.columns.some(function (c) { return c.key === state.sort; })) {
      rows.sort(compare(state.sort, state.dir));
    }
    headRow.querySelectorAll("th").forEach(function (th) {
      if (th.dataset.key === state.sort) {
        th.setAttribute("aria-sort", state.dir === "desc" ? "descending" : "ascending");
      } else {
        th.removeAttribute("aria-sort");
      }
    });
    var fragment = document.createDocumentFragment();
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.className = "row" + (open.indexOf(row.id) >= 0 ? " open" : "");
      tr.dataset.row = row.id;
      data.columns.forEach(function (column) {
        var td = document.createElement("td");
        td.textContent = row.cells[column.key][0];
        if (column.numeric) td.className = "num";
        tr.appendChild(td);
      });
      tr.addEventListener("click", function () {
        var now = (readState().open || "").split(",").filter(Boolean);
        var at = now.indexOf(row.id);
        if (at >= 0) now.splice(at, 1); else now.push(row.id);
        update("open", now.join(","));
      });
      fragment.appendChild(tr);
      if (open.indexOf(row.id) >= 0) {
        var detail = document.createElement("tr");
        detail.className = "detail";
        detail.dataset.detail = row.id;
        var td = document.createElement("td");
        td.colSpan = data.columns.length;
        td.innerHTML = data.details[row.id];
        detail.appendChild(td);
        fragment.appendChild(detail);
      }
    });
    body.replaceChildren(fragment);
    count.textContent = rows.length + " of " + data.rows.length + " rows";
  }

  window.addEventListener("hashchange", render);
  render();

  // Transfer heatmaps: one metric shown at a time.
  var metric = document.getElementById("transfer-metric");
  if (metric) {
    var show = function () {
      document.querySelectorAll("table.heat").forEach(function (t) {
        t.hidden = t.dataset.metric !== metric.value;
      });
    };
    metric.addEventListener("change", show);
    show();
  }
  document.documentElement.dataset.ready = "1";
})();
