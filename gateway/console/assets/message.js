/* One message's journey across the regions, from the audit trace (the document of `yrdx audit trace --json`):
   each message of the conversation as a hop (origin → destination, outcome, step times), then every record on a
   timeline with one lane per region. Refreshed while records keep arriving. */
"use strict";

(() => {
  const {h, api, after, replace, shortId} = Y;
  const prefix = "/messages/";
  const id = location.pathname.startsWith(prefix) ? decodeURIComponent(location.pathname.slice(prefix.length)) : "";
  const notice = document.getElementById("notice");
  let last = "";
  let quietSince = Date.now();

  function fact(label, value, key) {
    return h("div", {class: "fact"}, h("div", {class: "label"}, label),
      h("div", {class: "value", dataset: key ? {k: key, value: String(value)} : {}}, String(value)));
  }

  function hop(x) {
    const cls = x.outcome === "delivered" ? "hop" : x.outcome === "rejected" ? "hop rejected" : "hop transit";
    const steps = x.steps.map((s) => h("span", {class: "step " + (s.kind === "good" ? "" : s.kind),
      title: `${s.at} at ${s.region}`}, `${s.region} ${s.stage}`, h("small", {}, after(s.after_ms))));
    const tail = x.round_trip_ms !== null && x.round_trip_ms !== undefined
      ? ` · receipt back after ${after(x.round_trip_ms).slice(1)}` : "";
    return h("div", {class: cls, dataset: {messageId: x.message_id, outcome: x.outcome}},
      h("div", {class: "route"}, x.origin || "?", h("span", {class: "arrow"}, "→"), x.destination || "?",
        h("span", {class: "muted small"}, `  ${x.outcome}${x.reason ? " (" + x.reason + ")" : ""}${tail}`)),
      h("div", {class: "muted small mono"}, x.message_id),
      h("div", {class: "steps"}, steps));
  }

  function describe(row) {
    const d = row.detail || {};
    const bits = [];
    for (const key of ["reason", "mode", "platform", "of", "source"]) if (d[key] !== undefined) bits.push(`${key} ${d[key]}`);
    if (d.signer) bits.push(`signer ${String(d.signer).slice(0, 10)}…`);
    return bits.join(" · ");
  }

  // A record's place in its chain: `41.3` for entry 3 of batch record 41 (trail format 3), else its seq.
  function place(row) {
    return row.entry == null ? String(row.seq) : `${row.seq}.${row.entry}`;
  }

  function timeline(doc) {
    const lanes = doc.lanes;
    const grid = document.getElementById("timeline");
    grid.style.gridTemplateColumns = `6.5rem repeat(${Math.max(1, lanes.length)}, minmax(13rem, 1fr))`;
    const cells = [h("div", {class: "cell lane-head time"}, "time")];
    for (const lane of lanes) cells.push(h("div", {class: "cell lane-head"}, `${lane} ${Y.NAMES[lane] || ""}`));
    for (const row of doc.rows) {
      cells.push(h("div", {class: "cell time", title: row.at}, after(row.after_ms)));
      lanes.forEach((lane, i) => {
        if (i !== row.lane) {
          cells.push(h("div", {class: "cell"}));
          return;
        }
        const who = row.receipt ? "receipt" : row.message_id === id ? "" : shortId(row.message_id);
        cells.push(h("div", {class: "cell"},
          h("span", {class: `rec ${row.kind === "good" ? "" : row.kind}${row.receipt ? " receipt" : ""}`,
            title: `${row.at} · record ${row.hash.slice(0, 16)}… ${describe(row)}`,
            dataset: {region: row.region, chain: row.chain, stage: row.stage, seq: String(row.seq),
              entry: row.entry == null ? "" : String(row.entry),
              messageId: row.message_id}},
          row.stage, h("span", {class: "seq"}, `#${place(row)}`), who ? h("span", {class: "who"}, who) : null)));
      });
    }
    replace(grid, cells);
  }

  function records(doc) {
    const head = h("tr", {}, ["at", "chain", "seq", "stage", "message", "envelope", "record", "detail"]
      .map((c) => h("th", {}, c)));
    const rows = doc.rows.map((r) => h("tr", {},
      h("td", {class: "mono"}, r.at), h("td", {}, r.chain), h("td", {class: "num"}, place(r)),
      h("td", {}, r.stage), h("td", {class: "mono", title: r.message_id}, shortId(r.message_id) +
        (r.receipt ? " (receipt)" : "")),
      h("td", {class: "mono"}, (r.envelope_sha256 || "–").slice(0, 12)), h("td", {class: "mono"}, r.hash.slice(0, 12)),
      h("td", {class: "small"}, Object.entries(r.detail).map(([k, v]) => `${k}=${v}`).join(" "))));
    replace(document.getElementById("records"), h("thead", {}, head), h("tbody", {}, rows));
  }

  function render(doc) {
    document.getElementById("journey").hidden = false;
    notice.textContent = "";
    const delivered = doc.hops.filter((x) => x.outcome === "delivered").length;
    replace(document.getElementById("facts"),
      fact("message", doc.message_id),
      fact("conversation", (doc.correlation_ids || []).join(", ") || "–"),
      fact("regions", doc.regions.join(" · "), "journey.regions"),
      fact("messages · delivered", `${doc.message_ids.length} · ${delivered}`),
      fact("receipts", String(doc.receipt_ids.length)),
      fact("audit records", String(doc.records.length), "journey.records"));
    const conflicts = document.getElementById("conflicts");
    conflicts.hidden = !(doc.conflicts && doc.conflicts.length);
    conflicts.textContent = conflicts.hidden ? "" : `${doc.conflicts.length} record(s) on the audit topic touch ` +
      "this trace but are not their region's own (forged, edited or rewritten): see yrdx audit trace.";
    replace(document.getElementById("hops"), doc.hops.map(hop));
    timeline(doc);
    records(doc);
    document.body.dataset.state = "loaded";
    document.body.dataset.records = String(doc.records.length);
  }

  async function load() {
    try {
      const doc = await api(`/api/messages/${encodeURIComponent(id)}`);
      const key = JSON.stringify(doc.records.map((r) => [r.region, r.seq, r.entry]));
      if (key !== last) {
        last = key;
        quietSince = Date.now();
        render(doc);
      }
    } catch (e) {
      if (e.status === 404) {
        document.body.dataset.state = "missing";
        notice.textContent = `No audit record names ${id} yet.` +
          (e.body && e.body.index && e.body.index.error ? ` (the index is not following: ${e.body.index.error})` : "");
      } else {
        document.body.dataset.state = "error";
        notice.textContent = `Cannot trace ${id}: ${e.message}`;
      }
    }
    if (Date.now() - quietSince < 30000 && document.visibilityState !== "hidden") setTimeout(load, 2000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const input = document.getElementById("message-id");
    if (!id) {
      document.body.dataset.state = "empty";
      input.focus();
      return;
    }
    input.value = id;
    document.title = `${shortId(id)} · yrdx console`;
    load();
  });
})();
