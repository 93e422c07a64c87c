// The farm dashboard: live tiles over one EventSource; filters, grouping and
// sorting in the page; controls for a control token. Plain JavaScript, no build.
"use strict";
(() => {
  const main = document.getElementById("tiles");
  const canControl = document.body.dataset.control === "1";
  const controls = document.getElementById("controls");
  const pick = (id) => document.getElementById(id);
  const view = { state: pick("f-state"), model: pick("f-model"), tag: pick("f-tag"),
    group: pick("group"), sort: pick("sort") };
  const tiles = () => Array.from(document.querySelectorAll("article.tile"));

  function decorate(tile) {
    const ends = tile.querySelector(".pinfo[data-ends]");
    if (ends) {
      const at = new Date(Number(ends.dataset.ends) * 1000);
      ends.textContent += " · ends " + at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    }
    if (canControl && controls && !tile.querySelector(".controls")) {
      tile.appendChild(controls.content.cloneNode(true));
    }
    const cam = tile.querySelector(".cam[data-src]");
    if (cam) cameras.observe(cam);
  }

  // The camera loads only while its tile is on screen.
  const cameras = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const cam = entry.target;
      if (entry.isIntersecting && !cam.firstChild) {
        const img = document.createElement("img");
        img.alt = "camera";
        img.src = cam.dataset.src;
        cam.appendChild(img);
      } else if (!entry.isIntersecting && cam.firstChild) {
        cam.textContent = "";
      }
    }
  });

  function options(select, values) {
    const chosen = select.value;
    const known = new Set(Array.from(select.options).map((o) => o.value));
    for (const value of [...values].sort()) {
      if (value && !known.has(value)) select.add(new Option(value, value));
    }
    select.value = chosen;
  }

  function arrange() {
    const all = tiles();
    options(view.model, new Set(all.map((t) => t.dataset.model)));
    options(view.tag, new Set(all.flatMap((t) => t.dataset.tags.split(" "))));
    const byName = (a, b) => a.dataset.name.localeCompare(b.dataset.name);
    const left = (t) => (t.dataset.remaining === "" ? Infinity : Number(t.dataset.remaining));
    all.sort(view.sort.value === "remaining" ? (a, b) => left(a) - left(b) || byName(a, b) : byName);
    let shown = 0;
    for (const tile of all) {
      const d = tile.dataset;
      const hide = (view.state.value && d.state !== view.state.value)
        || (view.model.value && d.model !== view.model.value)
        || (view.tag.value && !d.tags.split(" ").includes(view.tag.value));
      tile.classList.toggle("hidden", Boolean(hide));
      if (!hide) shown += 1;
    }
    const key = view.group.value;
    main.textContent = "";
    main.classList.toggle("grouped", Boolean(key));
    if (!key) {
      for (const tile of all) main.appendChild(tile);
    } else {
      const groups = new Map();
      for (const tile of all) {
        const name = (key === "tags" ? tile.dataset.tags.split(" ")[0] : tile.dataset[key]) || "none";
        if (!groups.has(name)) groups.set(name, []);
        groups.get(name).push(tile);
      }
      for (const [name, members] of [...groups].sort((a, b) => a[0].localeCompare(b[0]))) {
        const section = document.createElement("section");
        section.className = "group";
        const title = document.createElement("h2");
        title.textContent = name + " (" + members.length + ")";
        const grid = document.createElement("div");
        grid.className = "grid";
        members.forEach((t) => grid.appendChild(t));
        section.append(title, grid);
        main.appendChild(section);
      }
    }
    const counts = {};
    for (const tile of all) counts[tile.dataset.state] = (counts[tile.dataset.state] || 0) + 1;
    pick("counts").textContent = all.length + " printers · " + shown + " shown · "
      + Object.entries(counts).map(([k, v]) => v + " " + k).join(", ");
    attention(all);
  }

  function attention(all) {
    const band = pick("attention");
    const list = band.querySelector("ul");
    list.textContent = "";
    for (const tile of all.filter((t) => t.dataset.attention)) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = "#" + tile.id;
      link.textContent = tile.dataset.name + ": " + tile.dataset.attention;
      item.appendChild(link);
      list.appendChild(item);
    }
    band.hidden = !list.firstChild;
  }

  let pending = false;
  function later() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; arrange(); });
  }

  function replace(serial, html) {
    const old = document.getElementById("t-" + serial);
    const holder = document.createElement("div");
    holder.innerHTML = html;
    const fresh = holder.firstElementChild;
    if (!fresh) return;
    decorate(fresh);
    if (old) {
      fresh.classList.toggle("hidden", old.classList.contains("hidden"));
      old.replaceWith(fresh);
    } else {
      main.appendChild(fresh);
    }
    later();
  }

  function connect() {
    const source = new EventSource("/farm/api/events");
    source.onopen = () => pick("live").classList.add("on");
    source.onerror = () => pick("live").classList.remove("on");
    source.addEventListener("tile", (e) => {
      const body = JSON.parse(e.data);
      replace(body.serial, body.html);
    });
    source.addEventListener("reset", () => location.reload());
  }

  main.addEventListener("click", async (e) => {
    const button = e.target.closest("button[data-cmd]");
    if (!button) return;
    const tile = button.closest("article.tile");
    const cmd = button.dataset.cmd;
    if (cmd === "stop" && !confirm("Stop the print on " + tile.dataset.name + "?")) return;
    await send(tile.dataset.serial, cmd);
  });
  main.addEventListener("change", async (e) => {
    const select = e.target.closest("select[data-cmd=speed]");
    if (!select || !select.value) return;
    await send(select.closest("article.tile").dataset.serial, "speed", select.value);
    select.value = "";
  });

  async function send(serial, cmd, value) {
    let path = cmd;
    let body = null;
    if (cmd === "light-on" || cmd === "light-off") {
      path = "light";
      body = JSON.stringify({ on: cmd === "light-on" });
    }
    const query = cmd === "speed" ? "?level=" + encodeURIComponent(value) : "";
    const answer = await fetch("/farm/api/printers/" + encodeURIComponent(serial)
      + "/commands/" + path + query, {
      method: "POST", credentials: "same-origin",
      headers: { "x-bambu-request": "1", "content-type": "application/json" }, body,
    });
    if (!answer.ok) {
      let detail = answer.statusText;
      try { detail = (await answer.json()).detail; } catch (_) { /* not JSON */ }
      alert(cmd + " failed: " + detail);
    }
  }

  for (const select of Object.values(view)) select.addEventListener("change", arrange);
  tiles().forEach(decorate);
  arrange();
  connect();
})();
