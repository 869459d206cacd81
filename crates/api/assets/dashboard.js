// The dashboard's only script. It keeps the parts of a page marked `data-live` fresh:
// every `data-every` milliseconds, while the tab is visible, it fetches the fragment at
// `data-live` (rendered by the server with the same template) and swaps it in. A
// fragment marked `data-finished` (a run and its analyses ended) is not polled again;
// when a fragment's `data-reload-on` changes (an analysis finished), the whole page is
// reloaded, since the parts outside the fragment changed too. Ticked checkboxes are kept.
"use strict";

// Checkboxes ticked in a part (runs picked to compare) stay ticked in its fresh copy.
function keepPicks(old, fresh) {
  old.querySelectorAll("input[type=checkbox]:checked").forEach((box) => {
    const selector = `input[type=checkbox][name="${CSS.escape(box.name)}"][value="${CSS.escape(box.value)}"]`;
    const same = fresh.querySelector(selector);
    if (same) same.checked = true;
  });
}

function poll(el) {
  if (el.hasAttribute("data-finished")) return;
  const every = Number(el.dataset.every) || 3000;
  setTimeout(async () => {
    if (!document.hidden) {
      try {
        const response = await fetch(el.dataset.live, {
          credentials: "same-origin",
          headers: { Accept: "text/html" },
        });
        if (response.redirected && new URL(response.url).pathname === "/login") {
          location.assign(response.url); // the session expired
          return;
        }
        if (response.ok) {
          const template = document.createElement("template");
          template.innerHTML = (await response.text()).trim();
          const fresh = template.content.firstElementChild;
          if (fresh && fresh.hasAttribute("data-live")) {
            if (fresh.dataset.reloadOn !== el.dataset.reloadOn) {
              location.reload();
              return;
            }
            keepPicks(el, fresh);
            el.replaceWith(fresh);
            poll(fresh);
            return;
          }
        }
      } catch (_) {
        // The API is restarting or the network blinked: try again next time.
      }
    }
    poll(el);
  }, every);
}

document.querySelectorAll("[data-live]").forEach(poll);
