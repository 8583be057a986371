// Upload page: drag-and-drop or pick a CSV, check the obvious here, then a review step (the file,
// its size, an optional webhook URL) and the Upload button; the server checks the rest.
// Without JavaScript the same form posts and the server answers with a page.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  var zone = document.getElementById("drop-zone");
  var input = document.getElementById("file");
  var fileName = document.getElementById("file-name");
  var fileSize = document.getElementById("file-size");
  var chosen = document.getElementById("chosen");
  var review = document.getElementById("review");
  var webhook = document.getElementById("webhook_url");
  var errors = document.getElementById("errors");
  var button = document.getElementById("submit");
  var maxBytes = Number(form.dataset.maxBytes);

  function showErrors(list) {
    errors.textContent = "";
    list.forEach(function (e) {
      var li = document.createElement("li");
      li.className = "error";
      li.dataset.row = e.row == null ? "" : String(e.row);
      li.dataset.column = e.column || "";
      if (e.row != null) {
        var strong = document.createElement("strong");
        strong.textContent = "Row " + e.row;
        li.appendChild(strong);
      }
      if (e.column) {
        li.appendChild(document.createTextNode(" · "));
        var em = document.createElement("em");
        em.textContent = e.column;
        li.appendChild(em);
      }
      li.appendChild(document.createTextNode((e.row != null || e.column ? ": " : "") + e.message));
      errors.appendChild(li);
    });
    errors.hidden = list.length === 0;
  }

  function problemWith(file) {
    if (!file) return "Choose a CSV file.";
    if (!/\.csv$/i.test(file.name) && file.type !== "text/csv") return file.name + " is not a CSV file.";
    if (file.size === 0) return file.name + " is empty.";
    if (file.size > maxBytes) return file.name + " is larger than the limit of " + size(maxBytes) + ".";
    return null;
  }

  function size(bytes) {
    return bytes >= 1048576 ? (bytes / 1048576).toFixed(1) + " MB" : Math.ceil(bytes / 1024) + " KB";
  }

  function submit() {
    var file = input.files[0];
    var problem = problemWith(file);
    if (problem) {
      showErrors([{ row: null, column: null, message: problem }]);
      return;
    }
    showErrors([]);
    button.disabled = true;
    button.textContent = "Uploading…";
    fetch(form.action, { method: "POST", body: new FormData(form), headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          if (response.status === 202 && body.redirect) {
            window.location.assign(body.redirect);
            return;
          }
          var list = body.details || [{ row: null, column: null, message: body.message || "Upload failed (" + response.status + ")." }];
          showErrors(list);
        });
      })
      .catch(function () { showErrors([{ row: null, column: null, message: "Could not reach PixShift." }]); })
      .finally(function () { button.disabled = false; button.textContent = "Upload and process"; });
  }

  // A file was dropped or picked: refuse the obvious at once, else show it for review.
  function choose() {
    var file = input.files[0];
    var problem = problemWith(file);
    if (problem) {
      showErrors([{ row: null, column: null, message: problem }]);
      chosen.hidden = true;
      review.hidden = true;
      return;
    }
    showErrors([]);
    fileName.textContent = file.name;
    fileSize.textContent = "(" + size(file.size) + ")";
    chosen.hidden = false;
    review.hidden = false;
    zone.classList.add("has-file");
    zone.querySelector(".drop-title").textContent = "Not this file? Drop another";
    zone.querySelector(".file-button").textContent = "Choose a different file";
    button.focus();
  }

  review.hidden = !(input.files && input.files[0]) && !webhook.value;
  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.add("dragging"); });
  });
  zone.addEventListener("dragleave", function () { zone.classList.remove("dragging"); });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    zone.classList.remove("dragging");
    var files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    input.files = files;
    choose();
  });
  input.addEventListener("change", choose);
  zone.addEventListener("click", function (event) {
    if (event.target === zone || event.target.parentNode === zone && event.target.tagName === "SPAN") input.click();
  });
  form.addEventListener("submit", function (event) { event.preventDefault(); submit(); });
})();
