/* yrdx console: helpers shared by the pages. Plain JavaScript, no framework, nothing loaded from elsewhere.
   Every value from the server reaches the page as text (textContent), never as HTML. */
"use strict";

const Y = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  /* h("td", {class: "num", dataset: {k: "x"}}, "text", child, ...) */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "dataset") Object.assign(el.dataset, value);
      else if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function svg(tag, attrs) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
    return el;
  }

  /* an element that carries a figure for the tests and tools: data-k (its key) and data-value (the raw number) */
  function fig(tag, key, value, text, attrs) {
    const dataset = {k: key, value: value === null || value === undefined ? "" : String(value)};
    return h(tag, {...(attrs || {}), dataset}, text);
  }

  const num = (v) => (v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en"));

  function rate(v) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "0/s";
    if (v < 0.1) return "<0.1/s";
    return (v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString("en")) + "/s";
  }

  function pct(v) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "0 %";
    if (v < 0.001) return "<0.1 %";
    return (v * 100).toFixed(v < 0.1 ? 1 : 0) + " %";
  }

  function ms(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const m = seconds * 1000;
    return m < 10 ? m.toFixed(1) + " ms" : m < 10000 ? Math.round(m) + " ms" : (m / 1000).toFixed(1) + " s";
  }

  function after(msValue) {
    if (msValue === null || msValue === undefined) return "";
    return msValue < 1000 ? `+${Math.round(msValue)} ms` : `+${(msValue / 1000).toFixed(2)} s`;
  }

  function days(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 0) return "expired";
    const d = seconds / 86400;
    return d >= 2 ? `${Math.floor(d)} d` : `${Math.max(0, Math.floor(seconds / 3600))} h`;
  }

  const clock = (epochSeconds) => new Date(epochSeconds * 1000).toLocaleTimeString("en-GB", {hour12: false});

  function shortId(id) {
    return id ? "…" + id.slice(-12) : "–";
  }

  /* fetch JSON from the console's API; a lapsed session sends the page to the sign-in */
  async function api(path, options) {
    const opts = {credentials: "same-origin", headers: {Accept: "application/json"}, ...(options || {})};
    if (opts.method && opts.method !== "GET") {
      opts.headers = {...opts.headers, "Content-Type": "application/json", "X-CSRF-Token": csrf()};
    }
    const response = await fetch(path, opts);
    if (response.status === 401) {
      toLogin();
      throw new Error("signed out");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const why = body && body.detail ? body.detail : `HTTP ${response.status}`;
      const error = new Error(why);
      error.status = response.status;
      error.body = body;
      throw error;
    }
    return body;
  }

  function toLogin() {
    const next = location.pathname + location.search;
    location.href = "/login?next=" + encodeURIComponent(next);
  }

  function regions() {
    return document.querySelector('meta[name="regions"]').content.split(" ").filter(Boolean);
  }

  const NAMES = {SH: "Shanghai", JS: "Jiangsu", ZJ: "Zhejiang", AH: "Anhui"};

  function markNav() {
    const page = document.body.dataset.page;
    for (const a of document.querySelectorAll(".top nav a")) {
      if (a.dataset.nav === page) a.classList.add("current");
    }
  }

  function replace(el, ...children) {
    el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  }

  /* a certificate's name as the operator knows it: the CN of a distinguished name, a region code as it is */
  function certName(name) {
    const cn = /(?:^|,)\s*CN=([^,]+)/.exec(name || "");
    return cn ? cn[1] : name;
  }

  document.addEventListener("DOMContentLoaded", markNav);

  return {h, svg, fig, num, rate, pct, ms, after, days, clock, shortId, api, toLogin, regions, NAMES, replace,
    certName};
})();
