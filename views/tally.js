// Makes the builder live. Without JavaScript the form submits by GET and the
// server renders the same snippets.
"use strict";
(function () {
  const form = document.getElementById("builder");
  if (!form) return;
  const defaults = { left_text: "visitors", left_color: "#595959", right_color: "#1283c3",
                     style: "flat", format: "plain", show: "total", base: "0", theme: "light",
                     left_color_dark: "", right_color_dark: "" };
  const $ = (id) => document.getElementById(id);
  const origin = window.location.origin;

  // theme: "" for the form's, else the one wanted (builder.py's scheme_urls).
  function query(preview, theme) {
    const data = new FormData(form);
    const params = new URLSearchParams();
    params.set("page_id", data.get("page_id") || "owner.repo");
    for (const name of Object.keys(defaults)) {
      let value = (data.get(name) || "").toString();
      if (name === "theme" && theme) value = theme;
      if (value !== "" && value !== defaults[name]) params.set(name, value);
    }
    if (preview) params.set("query_only", "true");
    return params.toString();
  }

  const HTML_ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;" };
  const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);

  function update() {
    const url = origin + "/badge?" + query(false);
    const label = ($("left_text").value || defaults.left_text);
    // The previews: what a reader sees on a light and on a dark page (builder.py's in_scheme).
    const auto = $("theme").value === "auto";
    $("preview").src = "/badge?" + query(true, auto ? "light" : "");
    $("preview-dark").src = "/badge?" + query(true, auto ? "dark" : "");
    // The same escaping as server.py's snippets(), for pages built without JavaScript.
    $("snippet-markdown").value = "![" + label.replace(/[\\\[\]]/g, "\\$&") + "](" + url + ")";
    $("snippet-html").value = '<img src="' + url + '" alt="' + escapeHtml(label) + '">';
    $("snippet-rst").value = ".. image:: " + url + "\n   :alt: " + label;
    $("snippet-picture").value = '<picture>\n  <source media="(prefers-color-scheme: dark)" srcset="' +
      origin + "/badge?" + query(false, "dark") + '">\n  <img src="' + origin + "/badge?" +
      query(false, "light") + '" alt="' + escapeHtml(label) + '">\n</picture>';
    const pageId = new FormData(form).get("page_id") || "owner.repo";
    $("stats-link").href = "/stats?page_id=" + encodeURIComponent(pageId);
    $("stats-link").textContent = "Stats for " + pageId;
    if ($("manage-link")) $("manage-link").href = "/manage?page_id=" + encodeURIComponent(pageId);
  }

  $("repo").addEventListener("input", function () {
    const match = this.value.trim().replace(/^https?:\/\/github\.com\//, "").match(/^([\w.-]+)\/([\w.-]+)/);
    if (match) { $("page_id").value = match[1] + "." + match[2]; update(); }
  });
  for (const name of ["left_color", "right_color", "left_color_dark", "right_color_dark"]) {
    $(name + "_pick").addEventListener("input", function () { $(name).value = this.value; update(); });
    $(name).addEventListener("input", function () {
      if (/^#[0-9a-fA-F]{6}$/.test(this.value)) $(name + "_pick").value = this.value;
    });
  }
  form.addEventListener("input", update);
  form.addEventListener("change", update);
  form.addEventListener("submit", function (event) { event.preventDefault(); update(); });

  for (const button of document.querySelectorAll("button.copy")) {
    button.addEventListener("click", async function () {
      const area = $(this.dataset.target);
      const status = this.parentElement.querySelector(".copied");
      area.select();
      let done = false;
      try { await navigator.clipboard.writeText(area.value); done = true; }
      catch (e) { done = document.execCommand && document.execCommand("copy"); }
      status.textContent = done ? "Copied." : "Selected: press Ctrl+C to copy.";
      this.textContent = done ? "Copied" : "Copy";
    });
  }
  update();
})();
