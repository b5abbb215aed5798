/* Dead letters of one region by reason, each with what became of it (from the audit index), and replay: one
   letter, or every letter of a reason. A replay button asks once more before it acts. */
"use strict";

(() => {
  const {h, api, num, replace, shortId, NAMES} = Y;
  const params = new URLSearchParams(location.search);
  const regions = Y.regions();
  const region = (params.get("region") || regions[0] || "").toUpperCase();
  const reason = params.get("reason") || "";
  const status = document.getElementById("status");

  function say(text, kind) {
    status.textContent = text;
    status.className = "status " + (kind || "");
  }

  function link(params) {
    const q = new URLSearchParams(params);
    return "/dlq?" + q.toString();
  }

  function renderTabs() {
    replace(document.getElementById("tabs"), regions.map((r) => h("a", {href: link({region: r}), role: "tab",
      class: r === region ? "current" : "", "aria-selected": r === region ? "true" : "false"},
    `${r} ${NAMES[r] || ""}`)));
  }

  /* a button that acts on its second click within 5 s */
  function armed(button, label, confirmLabel, action) {
    let timer = null;
    button.textContent = label;
    button.addEventListener("click", async () => {
      if (!button.classList.contains("armed")) {
        button.classList.add("armed");
        button.textContent = confirmLabel;
        timer = setTimeout(() => {
          button.classList.remove("armed");
          button.textContent = label;
        }, 5000);
        return;
      }
      clearTimeout(timer);
      button.classList.remove("armed");
      button.disabled = true;
      button.textContent = "replaying…";
      try {
        await action();
      } finally {
        button.textContent = label;
        button.disabled = false;
      }
    });
    return button;
  }

  async function doReplay(body, what) {
    try {
      const done = await api(`/api/dlq/${encodeURIComponent(region)}/replay`, {method: "POST",
        body: JSON.stringify(body)});
      say(`Replayed ${done.replayed} dead letter${done.replayed === 1 ? "" : "s"} (${what}) into ${done.inbox}. ` +
        "The gateway checks each again and delivers it once; the status below follows the audit trail.", "ok");
      document.body.dataset.replayed = String((Number(document.body.dataset.replayed) || 0) + done.replayed);
      for (const delay of [1500, 4000, 8000]) setTimeout(load, delay);
    } catch (e) {
      say(`Replay failed: ${e.message}`, "bad");
    }
  }

  function since(letter) {
    const s = letter.status;
    if (s.delivered && s.replays) return h("span", {class: "tag ok"}, `replayed ${s.replays}× · delivered`);
    if (s.delivered) return h("span", {class: "tag ok", title: "a message of this id was delivered in this region " +
      "(another copy of it, or before this one was refused)"}, "id delivered");
    if (s.replays) return h("span", {class: "tag warn"}, `replayed ${s.replays}×`);
    return h("span", {class: "tag bad"}, "dead");
  }

  function row(letter) {
    const button = h("button", {type: "button", class: "danger", dataset: {replay: letter.at}});
    armed(button, "Replay", "Confirm replay", () => doReplay({at: [letter.at]}, `position ${letter.at}`));
    const message = letter.message_id
      ? h("a", {href: `/messages/${encodeURIComponent(letter.message_id)}`, class: "mono",
        title: letter.message_id}, shortId(letter.message_id))
      : h("span", {class: "muted"}, "unparsable");
    return h("tr", {dataset: {at: letter.at, messageId: letter.message_id || "", reason: letter.reason}},
      h("td", {class: "mono"}, letter.at),
      h("td", {}, h("code", {}, letter.reason)),
      h("td", {}, message),
      h("td", {}, letter.type || "–"),
      h("td", {}, letter.from && letter.to ? `${letter.from} → ${letter.to}` : "–"),
      h("td", {class: "mono"}, letter.created_at ? letter.created_at.replace("T", " ").replace(/\.\d+Z$/, "Z") : "–"),
      h("td", {class: "detail"}, letter.detail || ""),
      h("td", {}, since(letter)),
      h("td", {}, button));
  }

  function render(doc) {
    const chips = [h("a", {class: reason ? "chip" : "chip current", href: link({region})}, "all",
      h("b", {}, num(doc.count)))];
    for (const [code, n] of Object.entries(doc.reasons)) {
      chips.push(h("a", {class: code === reason ? "chip current" : "chip", href: link({region, reason: code}),
        dataset: {reason: code}}, code, h("b", {}, num(n))));
    }
    replace(document.getElementById("chips"), chips);
    const all = document.getElementById("replay-reason");
    if (reason && doc.matching) {
      all.hidden = false;
    } else {
      all.hidden = true;
    }
    all.dataset.count = String(doc.matching);
    replace(document.querySelector("#letters tbody"), doc.letters.map(row));
    document.getElementById("empty").hidden = doc.letters.length > 0;
    document.getElementById("letters").hidden = doc.letters.length === 0;
    if (doc.listed < doc.matching) {
      say(`Showing the newest ${doc.listed} of ${doc.matching}.`);
    }
    if (doc.index && doc.index.error) {
      say(`The audit index is not following the trail (${doc.index.error}); statuses may be behind.`, "bad");
    }
    document.body.dataset.state = "loaded";
    document.body.dataset.loadedAt = String(doc.read_at);
  }

  async function load() {
    try {
      render(await api(`/api/dlq/${encodeURIComponent(region)}` + (reason ? `?reason=${encodeURIComponent(reason)}`
        : "")));
    } catch (e) {
      document.body.dataset.state = "error";
      say(`Cannot read the dead letters of ${region}: ${e.message}`, "bad");
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    renderTabs();
    const all = document.getElementById("replay-reason");
    armed(all, `Replay all ${reason}`, `Confirm: replay every ${reason}`,
      () => doReplay({reason}, `every ${reason}`));
    document.getElementById("refresh").addEventListener("click", load);
    load();
  });
})();
