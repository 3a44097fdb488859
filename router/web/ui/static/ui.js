// The dashboard's only script (the Content-Security-Policy allows no inline
// script): it refreshes the live part of the page, asks before destructive
// actions, and drops one-shot notices from the address bar.
"use strict";

(function () {
  // "?done=replayed&n=3" says what the last action did, once: keep it out
  // of the address a reload or a bookmark would use.
  const url = new URL(window.location.href);
  if (url.searchParams.has("done")) {
    url.searchParams.delete("done");
    url.searchParams.delete("n");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }

  // Forms with data-confirm ask first (replay, purge), and so do buttons
  // with their own (a conversation's skip, beside its pause).
  document.addEventListener("submit", function (event) {
    const form = event.target;
    const button = event.submitter;
    const question =
      (button instanceof HTMLElement && button.dataset.confirm) ||
      (form instanceof HTMLFormElement && form.dataset.confirm);
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // Every data-refresh seconds, fetch this page again and swap in its
  // [data-live] elements (by id): figures and charts move, the rest of the
  // page (open message bodies, a half-typed count) stays as it is.
  const every = Number(document.body.dataset.refresh || 0);
  if (!every || !document.querySelector("[data-live]")) {
    return;
  }
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    try {
      const response = await fetch(window.location.pathname + window.location.search, {
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.redirected && new URL(response.url).pathname === "/ui/login") {
        window.location.assign(response.url); // the session expired
        return;
      }
      const stale = !response.ok;
      if (!stale) {
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
        for (const old of document.querySelectorAll("[data-live]")) {
          const replacement = fresh.getElementById(old.id);
          if (replacement && !old.contains(document.activeElement)) {
            old.replaceWith(document.adoptNode(replacement));
          }
        }
      }
      document.body.classList.toggle("stale", stale);
    } catch (error) {
      document.body.classList.add("stale"); // the router is away: say so, try again later
    } finally {
      busy = false;
    }
  }
  window.setInterval(refresh, every * 1000);
})();
