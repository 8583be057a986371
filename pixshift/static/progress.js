// Progress page: a snapshot on joining, then coalesced live changes over Socket.IO.
(function () {
  "use strict";
  var body = document.body;
  var requestId = body.dataset.requestId;
  var page = Number(body.dataset.page) || 1;
  var FINISHED = ["completed", "completed_with_errors", "failed", "cancelled"];
  var RANK = { queued: 0, processing: 1, done: 2, failed: 2, cancelled: 2 };
  var $ = function (id) { return document.getElementById(id); };
  var resultsLoaded = !!$("results");

  function setLive(on) {
    $("live").textContent = on ? "live" : "reconnecting…";
    $("live").classList.toggle("on", on);
  }

  function setCounts(c) {
    if (!c) return;
    var shown = Number($("count-done").textContent) + Number($("count-failed").textContent);
    if (c.done + c.failed < shown) return; // an older message than what is on screen
    $("count-done").textContent = c.done;
    $("count-failed").textContent = c.failed;
    $("count-total").textContent = c.total;
    $("progress").value = c.percent;
    $("progress").textContent = c.percent + "%";
  }

  function setImages(images) {
    Object.keys(images || {}).forEach(function (id) {
      var chip = document.querySelector('.chip[data-image-id="' + id + '"]');
      var next = images[id];
      if (!chip || RANK[next.state] < RANK[chip.dataset.state]) return; // states only move forward
      chip.dataset.state = next.state;
      if (next.error_message) chip.title = chip.title.split(" — ")[0] + " — " + next.error_message;
    });
  }

  function setState(state) {
    if (!state) return;
    var el = $("request-state");
    if (FINISHED.indexOf(el.textContent) >= 0) return;
    el.textContent = state;
    el.className = "state state-" + state;
    if (FINISHED.indexOf(state) >= 0) {
      var cancel = $("cancel-form");
      if (cancel) cancel.remove(); // nothing left to cancel
      loadResults();
    }
  }

  function loadResults() {
    if (resultsLoaded) return;
    resultsLoaded = true;
    fetch("/requests/" + requestId + "/results?page=" + page, { headers: { Accept: "text/html" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (html) {
        var slot = $("results-slot");
        var holder = document.createElement("div");
        holder.innerHTML = html; // our own server-rendered, escaped fragment
        slot.replaceWith(holder.firstElementChild);
      })
      .catch(function () { resultsLoaded = false; });
  }

  function apply(message) {
    if (!message || message.request_id !== requestId) return;
    setCounts(message.counts);
    setImages(message.images);
    setState(message.state);
  }

  var socket = io({ transports: ["websocket", "polling"] });
  socket.on("connect", function () { socket.emit("join", { request_id: requestId, page: page }); });
  socket.on("snapshot", function (s) { apply(s); setLive(true); });
  socket.on("progress", apply);
  socket.on("disconnect", function () { setLive(false); });
  if (FINISHED.indexOf($("request-state").textContent) >= 0) loadResults();
})();
