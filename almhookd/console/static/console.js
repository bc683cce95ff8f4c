// almhookd console: small conveniences. Every page works without this file.
"use strict";

// The webhook form: show Username and Password only for Basic, and let "Select all"
// of an event group tick (and untick) the group's boxes at once.
for (const form of document.querySelectorAll("form.webhook-form")) {
  const basic = form.querySelector("[data-auth='basic']");
  const radios = form.querySelectorAll("input[name='auth_type']");
  const showBasic = () => {
    const chosen = form.querySelector("input[name='auth_type']:checked");
    if (basic) basic.hidden = chosen !== null && chosen.value !== "basic";
  };
  for (const radio of radios) radio.addEventListener("change", showBasic);
  showBasic();

  for (const all of form.querySelectorAll("input[data-select-all]")) {
    const boxes = form.querySelectorAll(
      "input[data-group='" + all.dataset.selectAll + "']",
    );
    const reflect = () => {
      all.checked = Array.from(boxes).every((box) => box.checked);
    };
    all.addEventListener("change", () => {
      for (const box of boxes) box.checked = all.checked;
    });
    for (const box of boxes) box.addEventListener("change", reflect);
    reflect();
  }
}
