// Request page: a Socket.IO snapshot on joining, then coalesced live changes. Images that finish
// are fetched as server-rendered tiles (same markup as a reload), a few at a time; filters and
// search work on the tiles of this page; the comparison dialog loads full-size images on demand.
(function () {
  "use strict";
  var body = document.body;
  var requestId = body.dataset.requestId;
  var page = Number(body.dataset.page) || 1;
  var name = body.dataset.name || "Request";
  var FINISHED = ["completed", "completed_with_errors", "failed", "cancelled"];
  var ENDED = ["done", "failed", "cancelled"];
  var RANK = { queued: 0, processing: 1, done: 2, failed: 2, cancelled: 2 };
  var WORDS = {
    queued: "Queued", processing: "Processing", done: "Done", failed: "Failed", cancelled: "Cancelled",
    completed: "Completed", completed_with_errors: "Completed with errors"
  };
  var $ = function (id) { return document.getElementById(id); };
  var stateEl = $("request-state");
  var filter = "all";
  var query = "";

  function word(state) { return WORDS[state] || String(state).replace(/_/g, " "); }
  function isFinished() { return FINISHED.indexOf(stateEl.dataset.state) >= 0; }

  // --- Times: the reader's local time in words; the server's text (UTC) stays if Intl is missing.
  function localTimes(root) {
    if (!window.Intl || !Intl.DateTimeFormat) return;
    var format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.dateTime);
      if (isNaN(d)) return;
      t.title = t.textContent;
      t.textContent = format.format(d);
    });
  }

  // Bytes as Jinja's filesizeformat writes them (decimal units), so live and reloaded pages agree.
  function bytes(n) {
    var units = ["Bytes", "kB", "MB", "GB", "TB"];
    var i = 0;
    n = Number(n) || 0;
    if (n < 1000) return n + (n === 1 ? " Byte" : " Bytes");
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return n.toFixed(1) + " " + units[i];
  }

  // --- Live region: counts at most every 4 s, state changes at once.
  var lastSaid = 0;
  var sayTimer = null;
  function announce(now) {
    var text = word(stateEl.dataset.state) + ": " + $("count-done").textContent + " done, " +
      $("count-failed").textContent + " failed, of " + $("count-total").textContent + " images.";
    var wait = now ? 0 : Math.max(0, 4000 - (Date.now() - lastSaid));
    clearTimeout(sayTimer);
    sayTimer = setTimeout(function () {
      lastSaid = Date.now();
      $("announce").textContent = text;
    }, wait);
  }

  function setTitle() {
    var head = isFinished() ? word(stateEl.dataset.state) : Math.round(Number($("progress").value)) + "%";
    document.title = head + " · " + name + " · PixShift";
  }

  function setLive(on) {
    $("live").textContent = on ? "live" : (isFinished() ? "finished" : "reconnecting…");
    $("live").classList.toggle("on", on);
  }

  // A rough time left, from the pace seen since this page opened (nothing until it means something).
  var pace = null;
  function setEta(c) {
    var ended = c.done + c.failed + (c.cancelled || 0);
    var now = Date.now();
    if (!pace) pace = { at: now, ended: ended };
    var rate = (ended - pace.ended) / ((now - pace.at) / 1000);
    var left = c.total - ended;
    var text = "";
    if (left > 0 && ended - pace.ended >= 3 && now - pace.at > 5000 && rate > 0) {
      var s = left / rate;
      text = s < 60 ? "under a minute left" : "about " + Math.round(s / 60) + " min left";
    }
    $("eta").textContent = text;
  }

  function setCounts(c) {
    if (!c) return;
    var shown = Number($("count-done").textContent) + Number($("count-failed").textContent);
    if (c.done + c.failed < shown) return; // an older message than what is on screen
    var changed = c.done + c.failed !== shown;
    $("count-done").textContent = c.done;
    $("count-failed").textContent = c.failed;
    $("count-total").textContent = c.total;
    if ($("count-cancelled")) {
      $("count-cancelled").textContent = c.cancelled || 0;
      $("count-cancelled").parentNode.hidden = !c.cancelled;
    }
    $("progress").value = c.percent;
    $("progress").textContent = c.percent + "%";
    $("percent").textContent = Math.round(c.percent) + "%";
    setEta(c);
    setTitle();
    if (changed) announce(false);
  }

  function setTotals(t) {
    if (!t) return;
    $("total-in").textContent = bytes(t.input_bytes);
    $("total-out").textContent = bytes(t.output_bytes);
    $("total-saved").textContent = t.saved_percent === null ? "–" : t.saved_percent + "%";
    $("total-images").textContent = t.images;
    $("total-images").nextSibling.textContent = t.images === 1 ? " finished image of the whole request." : " finished images of the whole request.";
  }

  // --- Tiles: states move forward only; an ended image's tile is fetched once, in batches.
  var wanted = {};
  var fetchTimer = null;
  var fetching = false;

  function setImages(images) {
    Object.keys(images || {}).forEach(function (id) {
      var next = images[id];
      var tile = $("image-" + id);
      if (!tile || RANK[next.state] < RANK[tile.dataset.state]) return;
      tile.dataset.state = next.state;
      var chip = tile.querySelector(".chip");
      if (chip) {
        chip.dataset.state = next.state;
        chip.textContent = word(next.state);
      }
      var placeholder = tile.querySelector(".placeholder");
      if (placeholder && next.state === "processing") {
        placeholder.className = "placeholder placeholder-processing";
        placeholder.textContent = "Working…";
      }
      if (ENDED.indexOf(next.state) >= 0 && tile.dataset.rendered !== next.state) wanted[id] = true;
    });
    scheduleTiles();
    applyFilter();
  }

  function scheduleTiles() {
    if (fetchTimer || fetching || !Object.keys(wanted).length) return;
    fetchTimer = setTimeout(fetchTiles, 250);
  }

  function fetchTiles() {
    fetchTimer = null;
    var ids = Object.keys(wanted).slice(0, 200);
    if (!ids.length) return;
    ids.forEach(function (id) { delete wanted[id]; });
    fetching = true;
    fetch("/requests/" + requestId + "/tiles?page=" + page + "&ids=" + ids.join(","), {
      headers: { Accept: "application/json" }, credentials: "same-origin"
    })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (doc) {
        Object.keys(doc.tiles).forEach(function (id) { replaceTile(id, doc.tiles[id]); });
        setTotals(doc.totals);
      })
      .catch(function () { ids.forEach(function (id) { wanted[id] = true; }); })
      .then(function () { fetching = false; applyFilter(); scheduleTiles(); });
  }

  function fragment(html) {
    var holder = document.createElement("div");
    holder.innerHTML = html; // our own server-rendered, escaped markup
    return holder.firstElementChild;
  }

  function replaceTile(id, html) {
    var old = $("image-" + id);
    if (!old) return;
    var tile = fragment(html);
    if (RANK[tile.dataset.state] < RANK[old.dataset.state]) return;
    var hadFocus = old.contains(document.activeElement);
    old.replaceWith(tile);
    if (hadFocus) (tile.querySelector("button, a") || tile).focus();
  }

  // --- Filters and search (over the tiles of this page).
  function applyFilter() {
    var results = $("results");
    if (!results) return;
    var counts = { all: 0, done: 0, failed: 0, cancelled: 0 };
    var visible = 0;
    results.querySelectorAll(".product").forEach(function (product) {
      var matches = !query || product.dataset.name.indexOf(query) >= 0 ||
        String(product.dataset.serial).indexOf(query.replace(/^#/, "")) === 0;
      var shown = 0;
      product.querySelectorAll(".tile").forEach(function (tile) {
        var s = tile.dataset.state;
        if (matches) {
          counts.all++;
          if (counts[s] !== undefined) counts[s]++;
        }
        var show = matches && (filter === "all" || s === filter);
        tile.hidden = !show;
        if (show) shown++;
      });
      product.hidden = shown === 0;
      visible += shown;
    });
    results.querySelectorAll(".filter").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.filter === filter));
    });
    results.querySelectorAll("[data-filter-count]").forEach(function (el) {
      el.textContent = "(" + counts[el.dataset.filterCount] + ")";
    });
    $("filter-empty").hidden = visible > 0;
  }

  document.addEventListener("click", function (e) {
    var button = e.target.closest(".filter");
    if (button) {
      filter = button.dataset.filter;
      applyFilter();
      return;
    }
    var compare = e.target.closest(".compare");
    if (compare) openCompare(compare.closest(".tile"), compare);
  });
  document.addEventListener("input", function (e) {
    if (e.target.id !== "search") return;
    query = e.target.value.trim().toLowerCase();
    applyFilter();
  });

  // --- When the request ends: the results section with its CSV link and deliveries.
  var resultsLoaded = false;
  function loadResults() {
    if (resultsLoaded || $("download-csv")) return;
    resultsLoaded = true;
    fetch("/requests/" + requestId + "/results?actions=1&page=" + page, { headers: { Accept: "text/html" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (html) {
        var active = document.activeElement;
        var focusId = active && (active.id || (active.closest(".tile") && active.closest(".tile").id));
        var focusClass = active && active.className;
        var section = fragment(html);
        var fresh = section.querySelector("#fresh-actions");
        if (fresh) {
          $("actions").replaceWith(fresh.content.firstElementChild);
          fresh.remove();
        }
        $("results").replaceWith(section);
        wanted = {};
        try { setTotals(JSON.parse(section.dataset.totals)); } catch (err) { /* the server's numbers stay */ }
        var search = $("search");
        if (search) search.value = query;
        applyFilter();
        localTimes(section);
        var again = focusId && $(focusId);
        if (again && again.classList.contains("tile")) again = again.querySelector("." + String(focusClass).split(" ")[0]) || again.querySelector("button, a");
        if (again) again.focus();
      })
      .catch(function () { resultsLoaded = false; });
  }

  function setState(state) {
    if (!state || isFinished()) return;
    var changed = stateEl.dataset.state !== state;
    stateEl.dataset.state = state;
    stateEl.textContent = word(state);
    stateEl.className = "state state-" + state;
    setTitle();
    if (changed) announce(true);
    if (FINISHED.indexOf(state) >= 0) {
      var cancel = $("cancel-form");
      if (cancel) cancel.remove(); // nothing left to cancel
      loadResults();
    }
  }

  function apply(message) {
    if (!message || message.request_id !== requestId) return;
    setCounts(message.counts);
    setImages(message.images);
    setState(message.state);
  }

  // --- Comparison dialog: full-size images are requested only when it opens.
  var dialog = $("compare");
  var frame = $("compare-frame");
  var beforeImg = $("compare-before");
  var afterImg = $("compare-after");

  function fact(text) {
    var li = document.createElement("li");
    li.textContent = text;
    return li;
  }

  function setView(view) {
    frame.dataset.view = view;
    dialog.querySelectorAll(".view").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.view === view));
    });
    $("compare-split").parentNode.hidden = view !== "split";
  }

  function setZoom(on) {
    frame.classList.toggle("zoomed", on);
    $("compare-zoom").setAttribute("aria-pressed", String(on));
    $("compare-zoom").textContent = on ? "Fit to window" : "Actual size";
  }

  function openCompare(tile) {
    if (!tile || !tile.dataset.output) return;
    var d = tile.dataset;
    $("compare-title").textContent = d.title;
    var facts = $("compare-facts");
    facts.textContent = "";
    facts.appendChild(fact(d.inFormat === d.outFormat ? "Format: " + d.inFormat + " (unchanged)"
      : "Format: " + d.inFormat + " → " + d.outFormat + " (converted)"));
    facts.appendChild(fact(d.inSize === d.outSize ? "Pixel size: " + d.inSize + " px (unchanged)"
      : "Pixel size: " + d.inSize + " px → " + d.outSize + " px (scaled down to fit the size target)"));
    facts.appendChild(fact("File size: " + d.bytesIn + " → " + d.bytesOut + " (" + d.saving + "% smaller)"));
    facts.appendChild(fact(d.lossless ? "Lossless: every visible pixel exactly as in the original, and still " +
      "within the size target." : "Quality " + d.quality + " of 100: the encoder's quality setting. PixShift picks " +
      "the highest quality whose file still fits the size target; lower numbers mean smaller files and " +
      "more visible compression."));
    if (d.reused) facts.appendChild(fact("Reused: the same image was already compressed earlier, so that result was used."));
    beforeImg.src = d.original || tile.querySelector(".thumb-before").src;
    afterImg.src = d.output;
    $("compare-original").href = d.original || tile.querySelector(".thumb-before").src;
    $("compare-output").href = d.output;
    setView("split");
    setZoom(false);
    $("compare-split").value = 50;
    frame.style.setProperty("--split", "50%");
    dialog.showModal();
  }

  $("compare-split").addEventListener("input", function (e) {
    frame.style.setProperty("--split", e.target.value + "%");
  });
  dialog.querySelectorAll(".view").forEach(function (b) {
    b.addEventListener("click", function () { setView(b.dataset.view); });
  });
  $("compare-zoom").addEventListener("click", function () { setZoom(!frame.classList.contains("zoomed")); });
  $("compare-close").addEventListener("click", function () { dialog.close(); });
  dialog.addEventListener("close", function () {
    // Stop loading what nobody looks at any more.
    beforeImg.removeAttribute("src");
    afterImg.removeAttribute("src");
  });

  // --- Start.
  localTimes(document);
  applyFilter();
  setTitle();
  var socket = io({ transports: ["websocket", "polling"] });
  socket.on("connect", function () { socket.emit("join", { request_id: requestId, page: page }); });
  socket.on("snapshot", function (s) { apply(s); setLive(true); });
  socket.on("progress", apply);
  socket.on("disconnect", function () { setLive(false); });
  if (isFinished()) loadResults();
})();
