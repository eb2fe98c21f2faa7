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
    var text = el.classList.contains("js-status") ? el : el.querySelector(".js-state");
    if (text) { text.textContent = status; }
  }

  function applyAgent(agent, runId) {
    all(attr("data-agent-id", agent.id)).forEach(function (el) { setStatus(el, agent.status); });
    if (agent.node_key && runId) {
      all(attr("data-node", runId + "/" + agent.node_key)).forEach(function (el) {
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
