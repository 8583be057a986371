// Webhooks page: copy buttons, and a confirmation <dialog> before an endpoint is deleted.
// Without JavaScript the delete button leads to a confirmation page instead.
(function () {
  "use strict";

  document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
    var source = document.querySelector(button.dataset.copy);
    if (!source || !navigator.clipboard) return;
    var label = button.textContent;
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(source.textContent.trim()).then(
        function () { button.textContent = "Copied"; },
        function () { button.textContent = "Copy failed: select the text"; }
      ).then(function () { setTimeout(function () { button.textContent = label; }, 2000); });
    });
  });

  var dialog = document.getElementById("confirm-delete");
  if (!dialog || typeof dialog.showModal !== "function") return;
  var pending = null;
  document.querySelectorAll("form.delete-form").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.confirmed) return;
      event.preventDefault();
      pending = form;
      document.getElementById("confirm-delete-url").textContent = form.dataset.url;
      dialog.showModal();
    });
  });
  document.getElementById("confirm-delete-no").addEventListener("click", function () { dialog.close(); });
  document.getElementById("confirm-delete-yes").addEventListener("click", function () {
    if (!pending) return;
    var confirm = document.createElement("input");
    confirm.type = "hidden";
    confirm.name = "confirm";
    confirm.value = "yes";
    pending.appendChild(confirm);
    pending.dataset.confirmed = "1";
    dialog.close();
    pending.requestSubmit();
  });
  dialog.addEventListener("close", function () {
    if (pending && !pending.dataset.confirmed) pending.querySelector("button").focus();
  });
})();
