// SOM console: asks before a form that changes something is sent (forms with data-confirm).
// Everything works without it.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form && form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
    return;
  }
  // A second click while the first is on its way does nothing (the idempotency key would
  // make it harmless anyway).
  var buttons = form.querySelectorAll("button[type=submit]");
  for (var i = 0; i < buttons.length; i++) {
    buttons[i].disabled = true;
  }
});
