// The queue page: reorder, hold, release, cancel and prioritise waiting jobs, queue a file.
// Every change is a POST with the header the server requires of cookie sessions; the page
// reloads afterwards to show the queue as the server now orders it.
(() => {
  "use strict";
  if (document.body.dataset.control !== "1") return;

  async function post(path, body, type) {
    const answer = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "x-bambu-request": "1", "content-type": type || "application/json" },
      body: body || null,
    });
    if (!answer.ok) {
      let detail = answer.statusText;
      try { detail = (await answer.json()).detail; } catch (_) { /* not JSON */ }
      throw new Error(detail);
    }
    return answer.json();
  }

  function job(path) { return "/farm/api/jobs/" + path; }

  async function act(row, action, value) {
    const id = row.dataset.id;
    if (action === "up" || action === "down") {
      // up: before the previous row; down: before the row after the next one (or last)
      const rows = Array.from(row.parentElement.querySelectorAll("tr[data-id]"));
      const at = rows.indexOf(row);
      const target = action === "up" ? rows[at - 1] : rows[at + 2];
      if (action === "up" && !target) return;
      const before = target ? "?before=" + encodeURIComponent(target.dataset.id) : "";
      return post(job(id + "/move" + before));
    }
    if (action === "priority") return post(job(id + "/priority?value=" + encodeURIComponent(value)));
    if (action === "cancel" && !confirm("Cancel " + row.dataset.name + "?")) return;
    return post(job(id + "/" + action));
  }

  document.addEventListener("click", async (e) => {
    const button = e.target.closest("button[data-act]");
    if (!button) return;
    try {
      await act(button.closest("tr"), button.dataset.act);
      location.reload();
    } catch (error) { alert(button.dataset.act + " failed: " + error.message); }
  });
  document.addEventListener("change", async (e) => {
    const input = e.target.closest("input[data-act=priority]");
    if (!input) return;
    try {
      await act(input.closest("tr"), "priority", input.value);
      location.reload();
    } catch (error) { alert("priority failed: " + error.message); }
  });

  const form = document.getElementById("upload");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const file = data.get("file");
    const query = new URLSearchParams({
      name: file.name.replace(/\.gcode\.3mf$|\.3mf$/i, ""),
      plate: data.get("plate"), copies: data.get("copies"),
      target: data.get("target"), priority: data.get("priority"),
    });
    const out = form.querySelector("output");
    out.textContent = "uploading…";
    try {
      const answer = await post("/farm/api/jobs?" + query, file, "application/octet-stream");
      out.textContent = "queued " + answer.jobs.length + " job(s)";
      location.reload();
    } catch (error) { out.textContent = "refused: " + error.message; }
  });
})();
