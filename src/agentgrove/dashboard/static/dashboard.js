// agentgrove dashboard: live updates from /events/stream (server-sent events).
// Each event carries the current state of its agent and run; elements that show an agent, a
// workflow node or a run carry data-agent-id / data-node / data-run-id and get their
// data-status (and text) updated in place, so a page never needs a reload.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var after = document.body.dataset.after || "0";
  var source = new EventSource("/events/stream?after=" + encodeURIComponent(after));

  function all(selector) { return Array.prototype.slice.call(document.querySelectorAll(selector)); }
  function attr(name, value) { return "[" + name + '="' + CSS.escape(String(value)) + '"]'; }

  function setStatus(el, status) {
    el.dataset.status = status;
    var text = el.querySelector(".js-state") || (el.children.length === 0 ? el : null);
    if (text) { text.textContent = status; }
  }

  // Same format as the server's money filter.
  function money(value) {
    if (!value) { return "$0"; }
    return value < 1 ? "$" + value.toFixed(4) : "$" + value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }

  function updateRow(row, agent) {
    row.dataset.tokens = agent.tokens;
    row.dataset.cost = agent.cost_usd;
    var cell = row.querySelector(".js-agent");
    if (cell && !cell.querySelector("a[href='/agents/" + agent.id + "']")) {
      cell.textContent = "";
      var link = document.createElement("a");
      link.className = "mono";
      link.href = "/agents/" + agent.id;
      link.textContent = agent.id;
      cell.appendChild(link);
    }
    var tokens = row.querySelector(".js-tokens");
    if (tokens) { tokens.textContent = agent.tokens.toLocaleString("en-US"); }
    var cost = row.querySelector(".js-cost");
    if (cost) { cost.textContent = money(agent.cost_usd); }
    var output = row.querySelector(".js-output");
    if (output && agent.output) {
      output.textContent = agent.output;
      output.classList.toggle("bad", agent.failed);
    }
    var rows = all("tr.node-row");
    var sumTokens = rows.reduce(function (n, r) { return n + Number(r.dataset.tokens || 0); }, 0);
    var sumCost = rows.reduce(function (n, r) { return n + Number(r.dataset.cost || 0); }, 0);
    var runTokens = document.getElementById("run-tokens");
    // data-earlier: what agents a rerun superseded spent (they count, as the budget counts them).
    if (runTokens) {
      runTokens.textContent = (sumTokens + Number(runTokens.dataset.earlier || 0)).toLocaleString("en-US");
    }
    var runCost = document.getElementById("run-cost");
    if (runCost) { runCost.textContent = money(sumCost + Number(runCost.dataset.earlier || 0)); }
  }

  function applyAgent(agent, runId) {
    all(attr("data-agent-id", agent.id)).forEach(function (el) { setStatus(el, agent.status); });
    if (agent.node_key && runId) {
      all(attr("data-node", runId + "/" + agent.node_key)).forEach(function (el) {
        if (el.classList.contains("node-row")) { updateRow(el, agent); return; }
        setStatus(el, agent.node_state);
        if (el.dataset.agent !== agent.id) {
          el.dataset.agent = agent.id;
          var link = el.closest("a");
          if (link) { link.setAttribute("href", "/agents/" + agent.id); }
        }
      });
    }
  }

  function addToFeed(list, e) {
    var item = document.createElement("li");
    item.className = "fresh";
    var when = document.createElement("span");
    when.className = "mono small";
    when.textContent = e.at.replace("T", " ").slice(0, 19);
    var kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = " " + e.kind + " ";
    item.appendChild(when);
    item.appendChild(kind);
    if (e.agent_id) {
      var link = document.createElement("a");
      link.className = "mono";
      link.href = "/agents/" + e.agent_id;
      link.textContent = e.agent_id;
      item.appendChild(link);
    }
    var detail = e.data && (e.data.tool || e.data.text || e.data.node || e.data.error_kind);
    if (detail) { item.appendChild(document.createTextNode(" " + String(detail).slice(0, 120))); }
    list.insertBefore(item, list.firstChild);
    while (list.children.length > 200) { list.removeChild(list.lastChild); }
  }

  source.onopen = function () { if (live) { live.dataset.state = "open"; } };
  source.onerror = function () { if (live) { live.dataset.state = "error"; } };
  source.onmessage = function (message) {
    var e = JSON.parse(message.data);
    if (e.agent) { applyAgent(e.agent, e.run_id); }
    if (e.run_id && e.run_status) {
      all(attr("data-run-id", e.run_id)).forEach(function (el) { setStatus(el, e.run_status); });
    }
    var feed = document.getElementById("feed");
    if (feed) { addToFeed(feed, e); }
    var mine = document.getElementById("agent-live");
    if (mine && e.agent_id === mine.dataset.agent) { addToFeed(mine, e); }
    var notice = document.getElementById("new-agents");
    if (notice && e.kind === "agent.spawned" && !document.querySelector(attr("data-agent-row", e.agent_id))) {
      notice.hidden = false;
    }
  };
})();
