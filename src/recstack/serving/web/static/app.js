/* recstack web UI: vanilla JS, no dependencies. Every page is an HTML shell (templates/page.html)
 * that this script fills in from the REST API with fetch(). Pages: home, movie, user, start, release, experiments. */
"use strict";

(() => {
  // ------------------------------------------------------------------------------------------ helpers
  const $ = (sel, root = document) => root.querySelector(sel);

  /** h("a", {href: "/", class: "x", onclick: fn}, "text", child) -> Element (text is never parsed as HTML). */
  function h(tag, attrs, ...children) {
    const el = tag === "svg" || SVG_TAGS.has(tag)
      ? document.createElementNS("http://www.w3.org/2000/svg", tag)
      : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "style" && typeof v === "object") for (const [p, pv] of Object.entries(v)) el.style.setProperty(p, pv);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const SVG_TAGS = new Set(["rect", "text", "g", "title", "line", "path", "circle"]);

  class ApiError extends Error {
    constructor(status, code, message, path) {
      super(message);
      this.status = status; this.code = code; this.path = path;
    }
  }

  /** fetch JSON from the API; throws ApiError (status 0 = network failure). */
  async function api(path, opts = {}) {
    let res;
    try {
      res = await fetch(path, {
        method: opts.method || "GET",
        headers: opts.body !== undefined ? { "Content-Type": "application/json" } : undefined,
        body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
        keepalive: !!opts.keepalive,
        signal: opts.signal,
      });
    } catch (e) {
      if (e && e.name === "AbortError") throw e;
      throw new ApiError(0, "network", "The recstack API could not be reached. Is the server running?", path);
    }
    let body = null;
    try { body = await res.json(); } catch (_) { body = null; }
    if (!res.ok) {
      const err = body && body.error ? body.error : {};
      throw new ApiError(res.status, err.code || "http_" + res.status, err.message || res.statusText || "request failed", path);
    }
    return body;
  }

  const qs = (params) => {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") p.set(k, v);
    const s = p.toString();
    return s ? "?" + s : "";
  };
  const urlParam = (name) => new URLSearchParams(location.search).get(name);
  function setUrlParam(name, value) {
    const u = new URL(location.href);
    if (value === null || value === undefined || value === "") u.searchParams.delete(name);
    else u.searchParams.set(name, value);
    history.replaceState(null, "", u.pathname + u.search);
  }

  let releasePromise = null;
  /** Human-readable model names of the release (/v1/release "labels": one mapping, server-side). */
  let LABELS = {};
  const getRelease = () => (releasePromise = releasePromise || api("/v1/release").then((r) => { LABELS = r.labels || {}; return r; }));
  const modelName = (m) => LABELS[m] || m;

  const fmt = (x, d = 2) => (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(d));
  /** "2026-11-23T08:50:14+00:00" -> "2026-11-23 08:50 UTC" (the same on every machine). */
  const when = (iso) => {
    const d = new Date(String(iso).replace(" ", "T"));
    return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  };
  const plural = (n, one, many) => `${n.toLocaleString()} ${n === 1 ? one : many || one + "s"}`;

  // ------------------------------------------------------------------------------------------ tiles
  const ARTICLES = new Set(["the", "a", "an", "la", "le", "les", "il", "el", "das", "der", "die"]);

  /** "Shawshank Redemption, The" -> "SR"; "12 Angry Men" -> "1A"; "Se7en" -> "S". */
  function initials(title) {
    let t = String(title || "?").replace(/\s*\(\d{4}\)\s*$/, "").replace(/,\s*(The|A|An|La|Le|Les|Il|El|Das|Der|Die)$/i, "");
    const words = t.split(/[\s:\-–,.&/]+/).map((w) => w.replace(/[^\p{L}\p{N}]/gu, "")).filter(Boolean);
    while (words.length > 1 && ARTICLES.has(words[0].toLowerCase())) words.shift();
    return (words.slice(0, 2).map((w) => w[0]).join("") || "?").toUpperCase();
  }
  function hue(text) {
    let x = 2166136261;
    for (const ch of String(text)) x = Math.imul(x ^ ch.codePointAt(0), 16777619) >>> 0;
    return x % 360;
  }
  function tile(title, cls = "tile", extra = []) {
    return h("div", { class: cls, style: { "--h": String(hue(title)) }, "aria-hidden": "true" }, initials(title), extra);
  }
  const movieLabel = (it) => (it.year ? `${it.title} (${it.year})` : it.title);

  /** A movie card (a link). opts: rank, why (node), onclick(event, item). */
  function movieCard(it, opts = {}) {
    const badge = it.year ? h("span", { class: "badge" }, it.year) : null;
    const rank = opts.rank ? h("span", { class: "rank" }, "#" + opts.rank) : null;
    const a = h("a", {
      class: "card", href: `/movies/${encodeURIComponent(it.item_id)}`, "data-item-id": it.item_id,
      "aria-label": movieLabel(it) + (opts.rank ? `, recommendation ${opts.rank}` : ""),
    },
    tile(it.title, "tile", [badge, rank]),
    h("div", { class: "card-body" },
      h("span", { class: "card-title" }, it.title),
      h("span", { class: "card-meta" }, (it.genres || []).slice(0, 3).join(" · ") || "–"),
      opts.why || null));
    if (opts.onclick) a.addEventListener("click", (ev) => opts.onclick(ev, it, a));
    return a;
  }

  const skeletons = (n) => Array.from({ length: n }, () => h("div", { class: "skeleton", "aria-hidden": "true" }));

  // ------------------------------------------------------------------------------------------ states
  /** An empty / error state box. kind: "empty" | "error"; actions: [{label, href} | {label, onclick}]. */
  function stateBox({ kind = "empty", title, message, detail, actions = [], heading = "h2" }) {
    return h("div", { class: `state state-${kind}`, role: kind === "error" ? "alert" : "status", "data-state": kind },
      h("div", { class: "state-icon", "aria-hidden": "true" }, kind === "error" ? "⚠️" : "🎬"),
      h(heading, {}, title),
      message ? h("p", {}, message) : null,
      detail ? h("p", {}, h("code", {}, detail)) : null,
      actions.length ? h("div", { class: "state-actions" }, actions.map((a) => a.href
        ? h("a", { class: "btn" + (a.primary ? " btn-primary" : ""), href: a.href }, a.label)
        : h("button", { type: "button", class: "btn" + (a.primary ? " btn-primary" : ""), onclick: a.onclick }, a.label))) : null);
  }

  function errorBox(err, retry, heading = "h2") {
    const status = err && err.status;
    const title = status === 0 ? "Cannot reach the API" : `The API answered with an error${status ? " (" + status + ")" : ""}`;
    return stateBox({
      kind: "error", heading, title,
      message: err && err.message ? err.message : "Something went wrong.",
      detail: err && err.path ? err.path : null,
      actions: retry ? [{ label: "Try again", onclick: retry, primary: true }, { label: "Home", href: "/" }] : [{ label: "Home", href: "/" }],
    });
  }

  function fill(container, ...nodes) {
    container.replaceChildren(...nodes.flat());
    container.removeAttribute("aria-busy");
  }

  // ------------------------------------------------------------------------------------------ type-ahead
  /** A combobox over GET /v1/search?q= (meaning + title). onChoose(item) when an option is picked; onSubmit(text)
   * when Enter is pressed without an active option. */
  function typeahead(root, { onChoose, onSubmit, limit = 8 }) {
    const input = $("input", root);
    const list = $("[role=listbox]", root);
    let items = [], active = -1, timer = 0, ctrl = null, seq = 0;

    const close = () => {
      list.hidden = true; input.setAttribute("aria-expanded", "false");
      input.removeAttribute("aria-activedescendant"); active = -1;
    };
    const setActive = (i) => {
      active = i;
      [...list.children].forEach((li, j) => li.setAttribute("aria-selected", j === i ? "true" : "false"));
      if (i >= 0 && list.children[i]) {
        input.setAttribute("aria-activedescendant", list.children[i].id);
        list.children[i].scrollIntoView({ block: "nearest" });
      } else input.removeAttribute("aria-activedescendant");
    };
    const choose = (i) => {
      const it = items[i];
      if (!it) return;
      close();
      onChoose(it);
    };
    const render = (q) => {
      list.replaceChildren();
      if (!items.length) {
        list.append(h("li", { class: "empty", role: "option", "aria-disabled": "true", id: input.id + "-none" }, `No movies match “${q}”`));
      }
      items.forEach((it, i) => list.append(h("li", {
        role: "option", id: `${input.id}-opt-${i}`, "aria-selected": "false", "data-item-id": it.item_id,
        onmousedown: (ev) => { ev.preventDefault(); choose(i); },
      }, tile(it.title, "tile mini-tile"), h("div", {},
        h("div", { class: "opt-title" }, it.title),
        h("div", { class: "opt-meta" }, [it.year, (it.genres || []).slice(0, 2).join(", ")].filter(Boolean).join(" · "))))));
      list.hidden = false; input.setAttribute("aria-expanded", "true"); active = -1;
    };
    const search = async () => {
      const q = input.value.trim();
      if (q.length < 2) { close(); return; }
      if (ctrl) ctrl.abort();
      ctrl = new AbortController();
      const my = ++seq;
      try {
        const body = await api("/v1/search" + qs({ q, k: limit }), { signal: ctrl.signal });
        if (my !== seq) return;
        items = body.items; render(q);
      } catch (e) {
        if (e.name === "AbortError" || my !== seq) return;
        items = [];
        list.replaceChildren(h("li", { class: "empty", role: "option", "aria-disabled": "true", id: input.id + "-err" }, "Search is unavailable: " + e.message));
        list.hidden = false; input.setAttribute("aria-expanded", "true");
      }
    };
    input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(search, 120); });
    input.addEventListener("keydown", (ev) => {
      const open = !list.hidden && items.length;
      if (ev.key === "ArrowDown") { ev.preventDefault(); if (list.hidden) search(); else if (open) setActive((active + 1) % items.length); }
      else if (ev.key === "ArrowUp") { ev.preventDefault(); if (open) setActive(active <= 0 ? items.length - 1 : active - 1); }
      else if (ev.key === "Enter") {
        ev.preventDefault();
        if (open && active >= 0) choose(active);
        else if (onSubmit && input.value.trim()) { close(); onSubmit(input.value.trim()); }
      } else if (ev.key === "Escape") { if (!list.hidden) { ev.preventDefault(); close(); } }
    });
    input.addEventListener("blur", () => setTimeout(close, 100));
    return { input, close };
  }

  // ------------------------------------------------------------------------------------------ models switch
  /** Radio buttons in a fieldset; unavailable models are shown disabled with the reason. */
  function modelSwitch(fieldset, models, selected, onChange, unavailable = {}) {
    const name = fieldset.id + "-model";
    const legend = $("legend", fieldset);
    fieldset.replaceChildren(legend);
    for (const m of models) {
      fieldset.append(h("label", {},
        h("input", { type: "radio", name, value: m, checked: m === selected, onchange: () => onChange(m) }),
        h("span", {}, modelName(m))));
    }
    for (const [m, reason] of Object.entries(unavailable)) {
      fieldset.append(h("label", { title: "not served: " + reason },
        h("input", { type: "radio", name, value: m, disabled: true, "aria-describedby": null }),
        h("span", {}, modelName(m))));
    }
    fieldset.hidden = models.length + Object.keys(unavailable).length < 2;
  }

  /** ?model= that the page does not serve: the same error box on the user and the movie page (the
   * API answers such a request with 422), naming the valid models with links to each. */
  function unknownModelBox(model, valid) {
    const href = (m) => { const u = new URL(location.href); u.searchParams.set("model", m); return u.pathname + u.search; };
    return stateBox({
      kind: "error", heading: "h3", title: "Unknown model",
      message: `There is no model “${model}” here. Valid models: ${valid.map((m) => `${modelName(m)} (${m})`).join(", ")}.`,
      actions: valid.map((m, i) => ({ label: modelName(m), href: href(m), primary: i === 0 })),
    });
  }

  // ------------------------------------------------------------------------------------------ why
  /** Why an item is recommended, from the sources the API returned for it (and, with explain, the
   * history item that added most to its score: "because"). ctx: {rel, body (the API answer),
   * ratings (Map item id -> rating or null of the user's history), liked (the visitor said they like
   * every history item)}. Never claims more than the sources say. */
  function reasonText(it, ctx) {
    const srcs = it.sources || (it.explain && it.explain.sources) || [];
    const because = it.explain && it.explain.because;
    if (because) {
      const r = ctx.ratings ? ctx.ratings.get(String(because.item_id)) : undefined;
      const liked = ctx.liked || (r !== undefined && r !== null && r >= 4);
      return `Because you ${liked ? "liked" : "watched"} ${because.title}`;
    }
    const kinds = (ctx.rel && ctx.rel.source_kinds) || {};
    const fallbacks = (ctx.body && ctx.body.fallbacks) || [];
    const days = (ctx.rel && ctx.rel.trending_days) || 30;
    for (const x of srcs) {
      const kind = kinds[x] || (x === "popular" ? "popular" : x === "trending" ? "trending" : x === "fill" ? "fill" : "history");
      if (kind === "history") return "Similar to movies you watched";
      if (kind === "ann") return ctx.body && ctx.body.user_kind === "profile" ? "Matches your profile" : "Close to your taste";
      if (kind === "trending") return days <= 7 ? "Popular this week" : days <= 31 ? "Popular this month" : `Popular in the last ${Math.round(days)} days`;
      if (kind === "popular") return fallbacks.includes("demographic") ? "Popular with people like you" : "Popular overall";
      if (kind === "fill") return "Popular overall";
    }
    return "";
  }

  function whyNode(it, ctx = {}) {
    const srcs = it.sources || (it.explain && it.explain.sources) || [];
    const ex = it.explain;
    const main = reasonText(it, ctx);
    const extra = ex && ex.demoted_by_genre_cap ? " · moved down for genre variety" : "";
    const detail = ex
      ? `sources: ${srcs.join(", ")}; recall scores: ${Object.entries(ex.recall_scores || {}).map(([k, v]) => `${k} ${fmt(v, 3)}`).join(", ")}; ` +
        `rank score ${fmt(ex.rank_score, 3)} (rank #${ex.rank_position}, shown #${ex.final_position})`
      : `sources: ${srcs.join(", ")}`;
    return h("div", { class: "why-wrap", title: detail },
      h("div", { class: "why", "aria-label": "Recommended by " + srcs.map(modelName).join(", ") }, srcs.map((x) => h("span", { class: "chip chip-accent", "data-source": x }, modelName(x)))),
      main ? h("div", { class: "why-text" }, main + extra) : null,
      h("span", { class: "visually-hidden" }, detail));
  }

  /** Record a click, then follow the link (the event is posted before leaving the page). */
  function clickRecorder(userId) {
    return async (ev, it, a) => {
      if (ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
      ev.preventDefault();
      const post = api("/v1/events", { method: "POST", body: { user_id: userId, item_id: it.item_id, type: "click" }, keepalive: true })
        .catch((e) => console.warn("event not recorded:", e.message));
      await Promise.race([post, new Promise((r) => setTimeout(r, 1500))]);
      location.href = a.href;
    };
  }

  // ------------------------------------------------------------------------------------------ footer
  function footer() {
    const el = $("#footer-release");
    if (!el) return;
    getRelease().then((r) => { el.replaceChildren("release ", h("a", { href: "/release", class: "mono" }, r.release_id)); },
      () => { el.textContent = "release unavailable"; });
  }

  function userJump() {
    const form = $(".user-jump");
    if (!form) return;
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const id = $("input", form).value.trim();
      if (id) location.href = "/users/" + encodeURIComponent(id);
    });
  }

  // ============================================================================================ pages
  // ------------------------------------------------------------------------------------------ home
  async function pageHome() {
    const rowsEl = $("#rows");
    const results = $("#search-results");
    typeahead($(".search"), {
      onChoose: (it) => { location.href = `/movies/${encodeURIComponent(it.item_id)}`; },
      onSubmit: (q) => { setUrlParam("genre", null); setUrlParam("q", q); showResults(); },
    });

    async function showResults() {
      const q = urlParam("q"), genre = urlParam("genre");
      if (!q && !genre) { results.hidden = true; rowsEl.hidden = false; return; }
      results.hidden = false; rowsEl.hidden = true;
      const title = q ? `Results for “${q}”` : `${genre} movies`;
      const head = h("div", { class: "section-head" }, h("h2", {}, title, " ", h("span", { class: "count" })),
        h("a", { class: "btn btn-ghost", href: "/" }, "Back to all genres"));
      const grid = h("div", { class: "grid" }, skeletons(12));
      results.replaceChildren(head, grid);
      try {
        // a query without a genre: GET /v1/search (meaning + title); a genre: the catalogue filter
        const body = q && !genre ? await api("/v1/search" + qs({ q, k: 60 })) : await api("/v1/items" + qs({ q, genre, limit: 60 }));
        $(".count", head).textContent = `(${body.total.toLocaleString()})`;
        if (!body.items.length) {
          grid.replaceChildren(stateBox({ title: "No results", heading: "h3",
            message: q ? `No movie title contains “${q}”. Check the spelling or try a shorter part of the title.` : `No movies in ${genre}.`,
            actions: [{ label: "Browse popular movies", href: "/" }] }));
        } else grid.replaceChildren(...body.items.map((it) => movieCard(it)));
      } catch (e) { grid.replaceChildren(errorBox(e, showResults, "h3")); }
    }

    async function loadRow(row, genre) {
      const track = $(".row-track", row);
      try {
        const body = await api("/v1/items" + qs({ genre, limit: 16 }));
        if (!body.items.length) track.replaceChildren(stateBox({ title: "Nothing here yet", heading: "h3" }));
        else track.replaceChildren(...body.items.map((it) => movieCard(it)));
      } catch (e) { track.replaceChildren(errorBox(e, () => loadRow(row, genre), "h3")); }
    }

    async function loadRows() {
      rowsEl.replaceChildren(...skeletonRows(2));
      let rel;
      try { rel = await getRelease(); } catch (e) { releasePromise = null; fill(rowsEl, errorBox(e, loadRows)); return; }
      const genres = rel.genres.filter((g) => g.toLowerCase() !== "unknown");
      const rows = [null, ...genres].map((g) => {
        const id = "row-" + (g || "popular").replace(/[^a-z0-9]+/gi, "-").toLowerCase();
        return h("section", { class: "row", "aria-labelledby": id, "data-genre": g || "" },
          h("div", { class: "row-head" }, h("h2", { id }, g ? g : "Most popular"),
            g ? h("a", { href: "/" + qs({ genre: g }), "aria-label": `See all ${g} movies` }, "See all") : null),
          h("div", { class: "row-track", role: "list" }, skeletons(8)));
      });
      fill(rowsEl, rows);
      // the first rows at once, the others when they scroll into view
      const io = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
        for (const e of entries) if (e.isIntersecting) { io.unobserve(e.target); loadRow(e.target, e.target.dataset.genre || null); }
      }, { rootMargin: "600px 0px" }) : null;
      const eager = [];
      rows.forEach((row, i) => (i < 3 || !io ? eager.push(loadRow(row, row.dataset.genre || null)) : io.observe(row)));
      await Promise.all(eager);
    }
    const skeletonRows = (n) => Array.from({ length: n }, () => h("section", { class: "row" },
      h("div", { class: "row-head" }, h("h2", {}, "\u00a0")), h("div", { class: "row-track" }, skeletons(8))));

    await Promise.all([loadRows(), showResults()]);
  }

  // ------------------------------------------------------------------------------------------ movie
  async function pageMovie() {
    const id = document.body.dataset.itemId;
    const root = $("#movie");
    let item;
    try {
      item = await api(`/v1/items/${encodeURIComponent(id)}`);
    } catch (e) {
      if (e.status === 404) {
        fill(root, stateBox({ kind: "error", title: "Movie not found",
          message: `There is no movie with id “${id}” in this release.`,
          actions: [{ label: "Search movies", href: "/", primary: true }] }));
      } else fill(root, errorBox(e, pageMovie));
      return;
    }
    document.title = `${item.title} · recstack`;
    const avg = item.average_rating;
    const stars = avg === null || avg === undefined ? "" : "★".repeat(Math.round(avg)) + "☆".repeat(5 - Math.round(avg));
    fill(root, h("article", { class: "detail" },
      tile(item.title, "tile", item.year ? h("span", { class: "badge" }, item.year) : null),
      h("div", {},
        h("h1", {}, item.title),
        h("p", { class: "sub" }, [item.year || "year unknown", `movie #${item.item_id}`].join(" · ")),
        h("div", { class: "genres" }, (item.genres || []).map((g) => h("a", { class: "chip chip-lg", href: "/" + qs({ genre: g }) }, g))),
        h("dl", { class: "stats" },
          h("div", { class: "stat" }, h("dt", {}, "Mean rating"),
            h("dd", {}, fmt(avg), h("small", {}, " / 5"), " ", h("span", { class: "stars", "aria-hidden": "true" }, stars))),
          countStats(item)))));

    const section = $("#similar-section");
    section.hidden = false;
    $("#similar-title").textContent = `Similar to ${item.title}`;
    const grid = $("#similar");
    let rel = null;
    try { rel = await getRelease(); } catch (_) { rel = null; }
    const models = rel ? rel.retrievers.filter((m) => m !== "pop") : [];
    let model = urlParam("model") || null;
    if (model && rel && !models.includes(model)) {
      modelSwitch($("#similar-models"), models, null, (m) => { model = m; setUrlParam("model", m); loadSimilar(); });
      grid.dataset.model = "";
      fill(grid, unknownModelBox(model, models));
      return;
    }

    async function loadSimilar() {
      grid.setAttribute("aria-busy", "true");
      grid.replaceChildren(...skeletons(6));
      try {
        const body = await api(`/v1/items/${encodeURIComponent(id)}/similar` + qs({ k: 12, model }));
        grid.dataset.model = body.model;
        if (!model) modelSwitch($("#similar-models"), models, body.model, (m) => { model = m; setUrlParam("model", m); loadSimilar(); });
        if (!body.items.length) fill(grid, stateBox({ title: "No similar movies", heading: "h3", message: `The ${modelName(body.model)} model found no movie similar to this one.` }));
        else fill(grid, body.items.map((it) => movieCard(it)));
      } catch (e) { fill(grid, errorBox(e, loadSimilar, "h3")); }
    }
    if (model) modelSwitch($("#similar-models"), models, model, (m) => { model = m; setUrlParam("model", m); loadSimilar(); });
    await loadSimilar();
  }

  /** The movie's counts, labelled by what they count: ratings, the distinct people who rated it and
   * the distinct people with any interaction. Equal counts are one stat ("Rated by"), not two. */
  function countStats(item) {
    const n = (x) => (x || 0).toLocaleString();
    const ratings = item.rating_count || 0;
    const raters = item.rater_count ?? ratings;
    const viewers = item.viewer_count ?? item.popularity ?? raters;
    const stat = (key, label, value, hint) => h("div", { class: "stat", "data-stat": key, title: hint }, h("dt", {}, label), h("dd", {}, value));
    const out = [];
    if (ratings === raters) out.push(stat("raters", "Rated by", `${n(raters)} ${raters === 1 ? "person" : "people"}`, "one rating per person in the release's data"));
    else {
      out.push(stat("ratings", "Ratings", n(ratings), "every rating in the release's data, re-ratings included"));
      out.push(stat("raters", "Distinct raters", n(raters), "people who rated it"));
    }
    if (viewers !== raters) out.push(stat("viewers", "Distinct viewers", n(viewers), "people with any interaction (ratings, views, clicks)"));
    return out;
  }

  // ------------------------------------------------------------------------------------------ user
  /** Rating histogram: one bar per star (1..5), or per half star (0.5..5) when the data has half
   * stars (MovieLens latest-small). */
  function histogram(ratings) {
    const half = ratings.some((r) => !Number.isInteger(r));
    const step = half ? 0.5 : 1;
    const values = Array.from({ length: half ? 10 : 5 }, (_, i) => step * (i + 1));
    const counts = values.map(() => 0);
    for (const r of ratings) {
      const b = Math.min(values.length, Math.max(1, Math.round(r / step)));
      counts[b - 1] += 1;
    }
    const max = Math.max(1, ...counts);
    const n = values.length;
    const W = 300, H = 130, bw = half ? 22 : 40, gap = (W - n * bw) / (n + 1), top = 18, base = H - 22;
    const name = (v) => `${v} star${v === 1 ? "" : "s"}`;
    const label = "Rating histogram: " + counts.map((c, i) => `${name(values[i])}: ${c}`).join(", ");
    return h("svg", { class: "histogram", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label },
      h("title", {}, label),
      counts.map((c, i) => {
        const bh = Math.max(c ? 3 : 0, ((base - top) * c) / max);
        const x = gap + i * (bw + gap);
        return h("g", {},
          h("rect", { class: "bar", x, y: base - bh, width: bw, height: bh, rx: half ? 3 : 5, opacity: String(0.45 + (0.52 * i) / (n - 1)) }),
          h("text", { class: "val", x: x + bw / 2, y: base - bh - 5, "text-anchor": "middle" }, c),
          h("text", { x: x + bw / 2, y: H - 6, "text-anchor": "middle" }, half && !Number.isInteger(values[i]) ? "½" : `${values[i]}★`));
      }),
      h("line", { x1: gap / 2, x2: W - gap / 2, y1: base, y2: base, stroke: "currentColor", "stroke-opacity": ".2" }));
  }

  async function pageUser() {
    const id = document.body.dataset.userId;
    const root = $("#user");
    let user;
    try {
      user = await api(`/v1/users/${encodeURIComponent(id)}` + qs({ history_limit: 10000 }));
    } catch (e) {
      if (e.status === 404) {
        fill(root, stateBox({ kind: "error", title: "Unknown user",
          message: `We don’t know a user with id “${id}”: no profile and no activity yet.`,
          actions: [{ label: "Get started as a new visitor", href: "/start", primary: true }, { label: "See user 1", href: "/users/1" }] }));
      } else fill(root, errorBox(e, pageUser));
      return;
    }
    document.title = `User ${id} · recstack`;
    const s = user.stats;
    const p = user.profile || {};
    const ratings = user.history.map((x) => x.rating).filter((r) => r !== null && r !== undefined);
    const profileLine = [p.age ? `${p.age} years` : null, { M: "male", F: "female" }[p.gender] || p.gender, p.occupation].filter(Boolean).join(" · ");
    fill(root, h("article", { class: "detail detail-user" },
      tile("user " + id, "tile avatar", null),
      h("div", {},
        h("h1", {}, `User ${id}`),
        h("p", { class: "sub" }, profileLine || (user.known ? "no profile" : "new visitor (events only)")),
        h("dl", { class: "stats" },
          h("div", { class: "stat" }, h("dt", {}, "Movies rated"), h("dd", { "data-stat": "rated" }, s.rated.toLocaleString())),
          h("div", { class: "stat" }, h("dt", {}, "Average"), h("dd", { "data-stat": "average" }, fmt(s.average_rating))),
          h("div", { class: "stat" }, h("dt", {}, "Highest"), h("dd", { "data-stat": "highest" }, fmt(s.highest_rating, 1))),
          h("div", { class: "stat" }, h("dt", {}, "Lowest"), h("dd", { "data-stat": "lowest" }, fmt(s.lowest_rating, 1)))),
        h("div", { class: "user-extra" },
          h("div", {},
            h("h2", { class: "visually-hidden" }, "Favourite genres"),
            h("p", { class: "hint", style: { margin: "0 0 .4rem" } }, "Favourite genres"),
            s.favourite_genres.length
              ? h("div", { class: "genres", id: "fav-genres" }, s.favourite_genres.map((g) => h("a", { class: "chip chip-lg chip-accent", href: "/" + qs({ genre: g }) }, g)))
              : h("p", {}, "none yet")),
          ratings.length ? h("figure", { style: { margin: 0 } }, histogram(ratings)) : null))));

    // watched list
    const wSec = $("#watched-section");
    wSec.hidden = false;
    $("#watched-title").textContent = `Watched (${s.count.toLocaleString()})`;
    const wList = $("#watched");
    const more = $("#watched-more");
    const renderWatched = (n) => {
      wList.replaceChildren(...user.history.slice(0, n).map((x) => h("li", {},
        tile(x.title, "tile mini-tile"),
        h("a", { class: "w-title", href: `/movies/${encodeURIComponent(x.item_id)}` }, x.title),
        h("span", { class: "w-meta" }, x.rating !== null && x.rating !== undefined ? h("span", { class: "stars", "aria-label": `rated ${x.rating}` }, "★ " + fmt(x.rating, Number.isInteger(x.rating) ? 0 : 1)) : "viewed / clicked",
          " · ", new Date(x.timestamp * 1000).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" })))));
      if (!user.history.length) wList.replaceChildren(stateBox({ title: "Nothing watched yet", heading: "h3" }));
      more.hidden = user.history.length <= n;
      more.textContent = `Show all ${user.history.length.toLocaleString()}`;
    };
    more.onclick = () => renderWatched(user.history.length);
    renderWatched(24);

    // recommendations with a model switch
    const rSec = $("#recs-section");
    rSec.hidden = false;
    const grid = $("#recs");
    let rel = null;
    try { rel = await getRelease(); } catch (_) { rel = null; }
    const models = rel ? rel.models : [];
    let model = urlParam("model") || (rel ? rel.default_model : null);
    const onClick = clickRecorder(id);
    const historyRatings = new Map(user.history.map((x) => [String(x.item_id), x.rating]));
    async function loadRecs() {
      grid.setAttribute("aria-busy", "true");
      grid.replaceChildren(...skeletons(6));
      if (rel && model && !models.includes(model)) {
        grid.dataset.model = "";
        $("#recs-note").textContent = "";
        fill(grid, unknownModelBox(model, models));
        return;
      }
      try {
        const body = await api(`/v1/users/${encodeURIComponent(id)}/recommendations` + qs({ k: 12, model, explain: "true" }));
        grid.dataset.model = body.model;
        $("#recs-note").textContent = recsNote(body, rel, s.count);
        if (!body.items.length) fill(grid, stateBox({ title: "No recommendations", heading: "h3", message: "Every movie was filtered out for this user." }));
        else fill(grid, body.items.map((it, i) => movieCard(it, { rank: i + 1, why: whyNode(it, { rel, body, ratings: historyRatings }), onclick: onClick })));
      } catch (e) { fill(grid, errorBox(e, loadRecs, "h3")); }
    }
    modelSwitch($("#rec-models"), models, model, (m) => { model = m; setUrlParam("model", m); loadRecs(); }, rel ? rel.unavailable_models || {} : {});
    await loadRecs();
  }

  /** What the recommendations went on: "not enough history" only when the answer says so (no history
   * reached the recall sources), whatever the user's id. */
  function recsNote(body, rel, historyCount) {
    const fb = body.fallbacks || [];
    if (fb.includes("no_history") || (!historyCount && fb.includes("popular")))
      return "Not enough history yet: these are popular picks. Click a few movies to personalise them.";
    if (fb.includes("popular")) return "Nothing in this release relates to this history yet: these are popular picks.";
    const sources = (rel ? rel.sources : []).map(modelName).join(", ") || "the release";
    return `Based on ${plural(historyCount, "movie")} in the history · model ${modelName(body.model)} · recall from ${sources} · release ${body.release_id}`;
  }

  // ------------------------------------------------------------------------------------------ onboarding
  function visitorId() {
    let v = null;
    try { v = localStorage.getItem("recstack.visitor"); } catch (_) { v = null; }
    if (!v) {
      v = "visitor-" + Math.random().toString(36).slice(2, 10);
      try { localStorage.setItem("recstack.visitor", v); } catch (_) { /* private mode */ }
    }
    return v;
  }

  async function pageStart() {
    const picked = new Map();
    const chips = $("#picked");
    const picks = $("#popular-picks");
    const err = $("#onboarding-error");

    const sync = () => {
      chips.replaceChildren(...[...picked.values()].map((it) => h("li", { class: "chip chip-accent chip-lg", "data-item-id": it.item_id },
        movieLabel(it), h("button", { type: "button", "aria-label": `Remove ${it.title}`, onclick: () => { picked.delete(String(it.item_id)); sync(); } }, "×"))));
      for (const b of picks.querySelectorAll(".pick")) b.setAttribute("aria-pressed", picked.has(b.dataset.itemId) ? "true" : "false");
      if (picked.size) err.textContent = "";
    };
    const toggle = (it) => { const k = String(it.item_id); if (picked.has(k)) picked.delete(k); else picked.set(k, it); sync(); };
    const ta = typeahead($(".search"), { onChoose: (it) => { picked.set(String(it.item_id), it); ta.input.value = ""; sync(); ta.input.focus(); } });

    const picksLoaded = (async function loadPicks() {
      picks.replaceChildren(...skeletons(6));
      try {
        const body = await api("/v1/items" + qs({ limit: 12 }));
        picks.replaceChildren(...body.items.map((it) => h("button", {
          type: "button", class: "pick", "aria-pressed": "false", "data-item-id": String(it.item_id), onclick: () => toggle(it),
          "aria-label": movieLabel(it),
        }, tile(it.title), h("span", { class: "pick-title" }, it.title))));
        sync();
      } catch (e) { picks.replaceChildren(errorBox(e, loadPicks, "h3")); }
    })();

    // the profile fields only when the serving data has demographics (ML-100K has, latest-small not)
    let rel = null;
    const profileReady = getRelease().then((r) => {
      rel = r;
      const demo = r.demographics || {};
      const GENDERS = { F: "Female", M: "Male" };
      const options = (sel, values, label) => { for (const v of values) sel.append(h("option", { value: v }, label(v))); };
      if (demo.gender) options($("#gender"), demo.gender, (v) => GENDERS[v] || v);
      if (demo.occupation) options($("#occupation"), demo.occupation, (v) => v.charAt(0).toUpperCase() + v.slice(1));
      $("#age-field").hidden = !demo.age;
      $("#gender-field").hidden = !demo.gender;
      $("#occupation-field").hidden = !demo.occupation;
      // ... and only when the release's cold-users validation found that a profile beats popular
      // (otherwise asking would promise a personalisation the answer does not have)
      const personal = !!(r.cold_start && r.cold_start.personal);
      const any = personal && !!(demo.age || demo.gender || demo.occupation);
      $("#profile-panel").hidden = !any;
      if (any) $("#start-lead").textContent = "Pick two or more movies you enjoyed and / or tell us a little about yourself — recommendations appear at once.";
    }, () => { /* without the release the form still takes picks */ });

    /** The picks become the visitor's history: one view event each (the API then excludes them and
     * recommends from them, here and on the visitor's own page). */
    async function recordPicks(visitor, liked) {
      const results = await Promise.allSettled(liked.map((item_id) =>
        api("/v1/events", { method: "POST", body: { user_id: visitor, item_id, type: "view" } })));
      const failed = results.filter((r) => r.status === "rejected");
      if (failed.length) console.warn("picks not recorded:", failed.map((r) => r.reason && r.reason.message));
      return failed.length === 0;
    }

    const out = $("#onboarding-results");
    const grid = $("#onboarding-recs");
    $("#onboarding").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const profile = {};
      const visible = (id) => !$(id).closest(".field").hidden && !$("#profile-panel").hidden;
      const age = visible("#age") ? $("#age").value.trim() : "";
      if (age) {
        const n = Number(age);
        if (!Number.isInteger(n) || n < 1 || n > 120) { err.textContent = "Age must be a whole number between 1 and 120."; $("#age").focus(); return; }
        profile.age = n;
      }
      if (visible("#gender") && $("#gender").value) profile.gender = $("#gender").value;
      if (visible("#occupation") && $("#occupation").value) profile.occupation = $("#occupation").value;
      const liked = [...picked.values()].map((it) => it.item_id);
      const hasProfile = Object.keys(profile).length > 0;
      if (liked.length < 2 && !hasProfile) {
        const withProfile = !$("#profile-panel").hidden;
        err.textContent = liked.length === 1
          ? "Pick at least one more movie" + (withProfile ? ", or tell us a little about yourself." : ".")
          : "Pick two or more movies you like" + (withProfile ? ", or fill in your profile." : ".");
        return;
      }
      err.textContent = "";
      out.hidden = false;
      grid.setAttribute("aria-busy", "true");
      grid.replaceChildren(...skeletons(6));
      const visitor = visitorId();
      // the visitor's id and the picks: liked_items makes the answer right even when recording the
      // picks as events failed (events_auth on, say)
      const body = { k: 12, explain: true, user_id: visitor };
      if (liked.length) body.liked_items = liked;
      if (hasProfile) body.profile = profile;
      const submit = $("#onboarding-submit");
      submit.disabled = true;
      try {
        const recorded = liked.length ? await recordPicks(visitor, liked) : false;
        const res = await api("/v1/recommendations", { method: "POST", body });
        const basis = [liked.length ? plural(liked.length, "movie") + " you like" : null, hasProfile ? "your profile" : null].filter(Boolean).join(" and ");
        $("#onboarding-note").textContent = `Based on ${basis} · model ${modelName(res.model)}`;
        const link = $("#visitor-link");
        link.href = `/users/${encodeURIComponent(visitor)}`;
        link.hidden = !recorded;
        if (!res.items.length) fill(grid, stateBox({ title: "No recommendations", heading: "h3", message: "Try picking different movies." }));
        else fill(grid, res.items.map((it, i) => movieCard(it, { rank: i + 1, why: whyNode(it, { rel, body: res, liked: true }), onclick: clickRecorder(visitor) })));
        out.scrollIntoView({ behavior: "smooth", block: "start" });
      } catch (e) { fill(grid, errorBox(e, () => $("#onboarding").requestSubmit(), "h3")); }
      finally { submit.disabled = false; }
    });
    await Promise.all([picksLoaded, profileReady]);
  }

  // ------------------------------------------------------------------------------------------ release
  const METRIC_COLS = [
    ["ndcg@10", "NDCG@10", 1], ["precision@10", "P@10", 1], ["recall@10", "R@10", 1], ["map@10", "MAP@10", 1],
    ["hr@10", "HR@10", 1], ["mrr@10", "MRR@10", 1], ["coverage@10", "Coverage", 1], ["novelty@10", "Novelty", 0],
    ["diversity@10", "Diversity", 0], ["stratified:ndcg@10", "NDCG@10 (stratified)", 1], ["fit_seconds", "Fit s", -1],
  ];

  async function pageRelease() {
    const root = $("#release");
    const [relR, linR, evR] = await Promise.allSettled([getRelease(), api("/v1/release/lineage"), api("/v1/release/evaluation")]);
    if (relR.status === "rejected") { releasePromise = null; fill(root, errorBox(relR.reason, pageRelease)); return; }
    const r = relR.value;
    const channels = linR.status === "fulfilled" ? linR.value.channels : {};
    const mine = Object.entries(channels).filter(([, v]) => v === r.release_id).map(([k]) => k);
    const unavailable = Object.entries(r.unavailable_models || {});
    const kv = (k, v) => h("div", {}, h("dt", {}, k), h("dd", {}, v));
    fill(root, h("article", { class: "detail detail-release" }, h("div", {},
      h("h1", {}, "Serving release"),
      h("p", { class: "sub" }, h("span", { class: "mono", id: "release-id" }, r.release_id), " ",
        mine.map((c) => h("span", { class: "chip chip-accent" }, c))),
      h("dl", { class: "kv" },
        kv("Created", r.created_at ? when(r.created_at) : "–"),
        kv("Loaded", `${when(r.loaded_at)} (in ${fmt(r.load_seconds, 1)} s)`),
        kv("Catalogue", `${plural(r.n_users, "user")} · ${plural(r.n_items, "item")} · ${plural(r.genres.length, "genre")}`),
        kv("Retrievers", r.retrievers.map(modelName).join(", ") || "–"),
        kv("Recall sources", r.sources.map(modelName).join(", ") || "–"),
        kv("Ranking models", r.models.map(modelName).join(", ") + (unavailable.length ? ` (not served: ${unavailable.map(([m]) => modelName(m)).join(", ")})` : "")),
        kv("Store / index", `${r.store} / ${r.index || "none"}`),
        kv("k", `default ${r.k_default}, max ${r.k_max}`)),
      unavailable.length ? h("p", { class: "hint", style: { margin: "1rem 0 0" } }, unavailable.map(([m, why]) => `${modelName(m)} is not served: ${String(why).replace(/^.*?\):\s*/, "")}`).join(" · ")) : null)));

    // lineage
    const lSec = $("#lineage-section");
    lSec.hidden = false;
    const lin = $("#lineage");
    if (linR.status === "rejected") lin.replaceChildren(errorBox(linR.reason, pageRelease, "h3"));
    else {
      lin.replaceChildren(...linR.value.lineage.map((e, i) => h("li", { class: i === 0 ? "current" : "" },
        h("div", { class: "t-head" }, h("strong", { class: "mono" }, e.release_id),
          i === 0 ? h("span", { class: "chip chip-accent" }, "serving") : null,
          (e.channels || []).map((c) => h("span", { class: "chip" }, c)),
          e.available ? null : h("span", { class: "chip" }, "deleted")),
        e.available ? h("div", { class: "t-meta" }, [
          when(e.created_at),
          e.dataset,
          "models " + (e.models || []).map(modelName).join(", "),
          e.headline && e.headline.value !== null ? `${modelName(e.headline.model)} ${e.headline.metric} ${fmt(e.headline.value, 4)}` : null,
          e.size_bytes ? (e.size_bytes / 1048576).toFixed(1) + " MB" : null,
        ].filter(Boolean).join(" · ")) : null)));
      if (linR.value.lineage.length === 1) lin.append(h("li", {}, h("div", { class: "t-meta" }, "First build: no parent release.")));
    }

    // evaluation
    const eSec = $("#evaluation-section");
    eSec.hidden = false;
    const table = $("#evaluation");
    if (evR.status === "rejected") {
      const e = evR.reason;
      $(".table-wrap", eSec).replaceWith(e.status === 404
        ? stateBox({ title: "No evaluation", heading: "h3", message: e.message })
        : errorBox(e, pageRelease, "h3"));
      return;
    }
    const ev = evR.value;
    $("#evaluation-note").textContent = `Holdout evaluation on ${ev.dataset}, protocol ${ev.protocol}, seed ${ev.seed}` +
      (ev.counts.train ? ` · ${ev.counts.train.toLocaleString()} train / ${ev.counts.test.toLocaleString()} test interactions` : "");
    const names = Object.keys(ev.results);
    const cols = METRIC_COLS.filter(([k]) => names.some((n) => ev.results[n][k] !== undefined));
    const best = {};
    for (const [k, , dir] of cols) {
      if (!dir) continue;
      const vals = names.map((n) => ev.results[n][k]).filter((v) => v !== undefined);
      best[k] = dir > 0 ? Math.max(...vals) : Math.min(...vals);
    }
    table.replaceChildren(
      h("caption", { class: "visually-hidden" }, "Holdout metrics per model"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Model"), cols.map(([, label]) => h("th", { scope: "col" }, label)))),
      h("tbody", {}, names.map((n) => h("tr", { "data-model": n }, h("th", { scope: "row", title: n }, modelName(n)),
        cols.map(([k, , dir]) => {
          const v = ev.results[n][k];
          return h("td", { class: dir && v === best[k] && names.length > 1 ? "best" : null }, v === undefined ? "–" : fmt(v, k === "fit_seconds" || k === "novelty@10" ? 2 : 4));
        })))));
    if (!names.length) table.replaceWith(stateBox({ title: "No models were evaluated", heading: "h3" }));
    // temporal-rolling: each model against the others, paired bootstrap 95% CI over users (warm users)
    const cis = (ev.comparisons && ev.comparisons.warm) || [];
    if (cis.length) {
      $("#evaluation-note").textContent += ` · mean over ${ev.windows.length} windows (warm users)`;
      table.after(h("ul", { class: "hint", id: "evaluation-cis" }, cis.map((c) => h("li", {},
        `${c.b} − ${c.a}: ${c.metric} ${c.diff >= 0 ? "+" : ""}${fmt(c.diff, 4)} (95% CI ${fmt(c.ci95[0], 4)} … ${fmt(c.ci95[1], 4)})`))));
    }
    const link = $("#report-link");
    if (ev.report_url) { link.href = ev.report_url; link.hidden = false; }
    $("#plots").replaceChildren(...ev.plots.map((p) => h("figure", {},
      h("a", { href: p.url, title: "Open the full-size plot" }, h("img", { src: p.url, alt: p.alt, loading: "lazy" })), h("figcaption", {}, p.alt))));
  }


  // ------------------------------------------------------------------------------------ experiments
  const ARM_METRICS = [["ctr", "CTR"], ["hit_rate", "Hit-rate@k"], ["mean_rating", "Mean rating"]];
  const pval = (p) => (p === null || p === undefined || Number.isNaN(p) ? "–" : p < 0.001 ? p.toExponential(1) : p.toFixed(3));

  /** CTR of each arm with its confidence interval, drawn as an SVG forest plot. */
  function forestPlot(svg, rep) {
    const arms = Object.keys(rep.arms).filter((a) => rep.arms[a].ctr.value !== null);
    if (!arms.length) return false;
    const los = arms.map((a) => rep.arms[a].ctr.ci[0] ?? rep.arms[a].ctr.value);
    const his = arms.map((a) => rep.arms[a].ctr.ci[1] ?? rep.arms[a].ctr.value);
    let lo = Math.min(...los), hi = Math.max(...his);
    const pad = (hi - lo) * 0.15 || Math.max(hi, 0.01) * 0.2;
    lo = Math.max(0, lo - pad); hi += pad;
    const W = 760, rowH = 34, left = 130, right = 20, top = 10, H = top + arms.length * rowH + 30;
    const x = (v) => left + ((v - lo) / (hi - lo)) * (W - left - right);
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("aria-label", "CTR per arm with confidence intervals");
    const nodes = [];
    for (let t = 0; t <= 4; t++) {
      const v = lo + ((hi - lo) * t) / 4;
      nodes.push(h("line", { x1: x(v), x2: x(v), y1: top, y2: H - 24, stroke: "currentColor", "stroke-opacity": 0.12 }),
        h("text", { x: x(v), y: H - 8, "text-anchor": "middle" }, v.toFixed(3)));
    }
    arms.forEach((a, i) => {
      const y = top + i * rowH + rowH / 2, m = rep.arms[a].ctr;
      const winner = rep.winner && rep.winner.arm === a;
      const color = winner ? "var(--accent)" : "currentColor";
      nodes.push(h("text", { x: 0, y: y + 4 }, a + (a === rep.control ? " (control)" : "")),
        h("line", { x1: x(los[i]), x2: x(his[i]), y1: y, y2: y, stroke: color, "stroke-width": 3, "stroke-linecap": "round" }),
        h("circle", { cx: x(m.value), cy: y, r: 6, fill: color }, h("title", {}, `${a}: CTR ${fmt(m.value, 4)} [${fmt(los[i], 4)}, ${fmt(his[i], 4)}]`)));
    });
    svg.replaceChildren(...nodes);
    return true;
  }

  function driftPanel(d) {
    const feats = Object.entries(d.psi || {});
    const note = $("#drift-note");
    if (!feats.length || feats.every(([, v]) => v === null)) {
      note.textContent = `Not enough live events yet (${(d.window_events || 0).toLocaleString()} of ${d.min_events || "–"} needed): drift appears once events arrive.`;
      return;
    }
    note.textContent = `PSI of the last ${d.window_events.toLocaleString()} events against the training data; above ${d.threshold} a feature has drifted.`;
    const max = Math.max(d.threshold * 2, ...feats.map(([, v]) => v || 0));
    $("#drift").replaceChildren(...feats.map(([f, v]) => {
      const over = v !== null && v > d.threshold;
      return h("div", { class: "drift-row", "data-feature": f },
        h("span", {}, f.replace("_", " ")),
        h("div", { class: "drift-bar" + (over ? " over" : ""), role: "meter", "aria-valuenow": v ?? 0, "aria-valuemin": 0, "aria-valuemax": max, "aria-label": `${f} PSI` },
          h("span", { style: { width: `${Math.min(100, ((v || 0) / max) * 100)}%` } }),
          h("i", { style: { left: `${(d.threshold / max) * 100}%` }, title: `threshold ${d.threshold}` })),
        h("strong", { class: over ? "chip chip-accent" : "" }, v === null ? "–" : fmt(v, 3)));
    }));
  }

  async function pageExperiments() {
    const root = $("#experiment");
    const [listR, driftR] = await Promise.allSettled([api("/v1/experiments"), api("/v1/monitoring/drift"), getRelease()]);
    if (driftR.status === "fulfilled") { $("#drift-section").hidden = false; driftPanel(driftR.value); }
    if (listR.status === "rejected") { fill(root, errorBox(listR.reason, pageExperiments)); return; }
    const list = listR.value;
    const wanted = new URLSearchParams(location.search).get("name");
    const exp = list.experiments.find((e) => e.name === wanted) || list.experiments.find((e) => e.status === "running") || list.experiments[0];
    if (!exp) {
      fill(root, stateBox({
        title: "No experiments yet", heading: "h1",
        message: "Split traffic between releases, models or pipeline settings and compare them on real users.",
        detail: "recstack experiments create --name my-test --arm control:1 --arm treatment:1:recall",
      }));
      return;
    }
    if (wanted && exp.name !== wanted) root.before(stateBox({ title: `No experiment ${wanted}`, message: "Showing the latest one instead." }));
    const kv = (k, v) => h("div", {}, h("dt", {}, k), h("dd", {}, v));
    const live = list.live === exp.name;
    fill(root, h("article", { class: "detail detail-release" }, h("div", {},
      h("h1", {}, "Experiment ", h("span", { class: "mono", id: "experiment-name" }, exp.name)),
      h("p", { class: "sub" }, h("span", { class: "chip" + (exp.status === "running" ? " chip-accent" : "") }, exp.status),
        exp.status === "running" ? h("span", { class: "chip" }, live ? "live on this server" : "not live: " + (list.error || "loading")) : null),
      exp.description ? h("p", {}, exp.description) : null,
      h("dl", { class: "kv" },
        kv("Arms", Object.entries(exp.shares).map(([a, s]) => `${a} ${(s * 100).toFixed(0)}%`).join(" · ")),
        kv("Serving", exp.arms.map((a) => `${a.name}: ${a.release || "serving release"}, model ${a.model ? modelName(a.model) : "default"}${a.pipeline ? ", own pipeline" : ""}`).join(" · ")),
        kv("Started", exp.created_at ? when(exp.created_at) : "–"),
        kv("Stopped", exp.stopped_at ? when(exp.stopped_at) : "–"),
        kv("Attribution", `clicks and ratings within ${Math.round(exp.window_s / 60)} min of the impression; hit-rate@${exp.k}`),
        kv("Assignment", `sticky: hash of salt "${exp.salt}" and the user id`)))));

    const aSec = $("#arms-section");
    aSec.hidden = false;
    const link = $("#exp-report-link");
    link.href = `/v1/experiments/${encodeURIComponent(exp.name)}/report?format=html`;
    link.hidden = false;
    let rep;
    try { rep = await api(`/v1/experiments/${encodeURIComponent(exp.name)}/report`); }
    catch (e) { $(".table-wrap", aSec).replaceWith(errorBox(e, pageExperiments, "h3")); rep = null; }
    if (rep) {
      const v = $("#exp-verdict");
      v.textContent = rep.verdict;
      v.className = "verdict" + (rep.winner ? "" : " none") + (rep.srm && rep.srm.mismatch ? " warn" : "");
      const lvl = Math.round(rep.level * 100);
      const cell = (arm, m) => {
        const est = rep.arms[arm][m];
        const t = rep.tests[arm] ? rep.tests[arm][m] : null;
        const sig = t && t.p_value !== null && t.p_value < rep.alpha;
        return h("td", { class: sig ? "sig" : null, "data-metric": m }, fmt(est.value, 4),
          h("span", { class: "ci" }, `[${fmt(est.ci[0], 4)}, ${fmt(est.ci[1], 4)}]`),
          h("span", { class: "ci" }, t ? `p ${pval(t.p_value)}` : "control"));
      };
      $("#arms").replaceChildren(
        h("caption", { class: "visually-hidden" }, "Per-arm metrics with confidence intervals"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Arm"), h("th", { scope: "col" }, "Users"), h("th", { scope: "col" }, "Impressions"),
          h("th", { scope: "col" }, "Clicks"),
          ARM_METRICS.map(([, label]) => h("th", { scope: "col" }, `${label.replace("@k", "@" + rep.k)} [${lvl}% CI]`)),
          h("th", { scope: "col" }, "Coverage"))),
        h("tbody", {}, Object.keys(rep.arms).map((a) => h("tr", { "data-arm": a, class: rep.winner && rep.winner.arm === a ? "winner" : null },
          h("th", { scope: "row" }, a, a === rep.control ? h("small", {}, " control") : null),
          h("td", {}, rep.arms[a].users.toLocaleString()), h("td", {}, rep.arms[a].impressions.toLocaleString()),
          h("td", {}, rep.arms[a].clicks.toLocaleString()),
          ARM_METRICS.map(([m]) => cell(a, m)),
          h("td", {}, rep.arms[a].coverage === null ? rep.arms[a].distinct_items : fmt(rep.arms[a].coverage * 100, 1) + "%")))));
      $("#arms-note").textContent = `p: two-sided test of each arm against ${rep.control} (delta method over users); sample-ratio check p = ${pval(rep.srm.p_value)}.`;
      const fig = $("#forest-figure");
      fig.hidden = !forestPlot($("#forest"), rep);
      $("#forest-caption").textContent = `CTR per arm with ${lvl}% confidence intervals`;
    }

    const xSec = $("#experiments-section");
    xSec.hidden = false;
    $("#experiments").replaceChildren(
      h("thead", {}, h("tr", {}, ["Experiment", "Status", "Arms", "Started", "Stopped"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, list.experiments.map((e) => h("tr", {},
        h("th", { scope: "row" }, h("a", { href: `/experiments?name=${encodeURIComponent(e.name)}` }, e.name)),
        h("td", {}, e.status), h("td", {}, Object.entries(e.shares).map(([a, s]) => `${a} ${(s * 100).toFixed(0)}%`).join(" · ")),
        h("td", {}, e.created_at ? when(e.created_at) : "–"), h("td", {}, e.stopped_at ? when(e.stopped_at) : "–")))));
  }

  // ------------------------------------------------------------------------------------------ boot
  const PAGES = { notfound: async () => {}, home: pageHome, movie: pageMovie, user: pageUser, start: pageStart, release: pageRelease, experiments: pageExperiments };
  /** The sticky header's height as --header-h (CSS keeps scrolled-to headings below it). */
  function headerHeight() {
    const bar = $(".topbar");
    if (!bar) return;
    const set = () => document.documentElement.style.setProperty("--header-h", bar.offsetHeight + "px");
    set();
    if ("ResizeObserver" in window) new ResizeObserver(set).observe(bar);
    else window.addEventListener("resize", set);
  }

  function boot() {
    headerHeight();
    footer();
    userJump();
    const fn = PAGES[document.body.dataset.page];
    if (fn) fn().catch((e) => {
      console.error(e);
      const main = $("#main");
      main.prepend(errorBox(e instanceof ApiError ? e : new ApiError(500, "ui", String(e && e.message || e), location.pathname)));
    }).finally(() => {
      document.body.dataset.readyMs = String(Math.round(performance.now()));
      document.body.dataset.ready = "true";
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
