// Every page: times written by the server in UTC (<time class="local" datetime="ISO">) shown in the
// reader's own time zone, e.g. "2 Dec 2026, 17:43".
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  document.querySelectorAll("time.local[datetime]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when.getTime())) {
      el.title = el.textContent;
      el.textContent = format.format(when);
    }
  });
})();
