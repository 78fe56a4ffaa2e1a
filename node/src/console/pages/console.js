// nmc console: live updates over server-sent events (/api/stream). Pages are rendered by the
// server and work without this script; it only refreshes the parts marked data-live from the
// server (which applies the same access rules and filters) when something changes.
'use strict';
(function () {
  const live = Array.from(document.querySelectorAll('[data-live]'));
  if (!live.length || !window.EventSource) return;
  const status = document.getElementById('live');
  let timer = null;
  let pendingAlerts = 0;
  function refresh() {
    timer = null;
    const added = pendingAlerts;
    pendingAlerts = 0;
    for (const el of live) {
      fetch(el.dataset.live, { credentials: 'same-origin', headers: { Accept: 'text/html' } })
        .then((r) => (r.ok ? r.text() : Promise.reject(new Error('HTTP ' + r.status))))
        .then((html) => {
          // Keep the keyboard focus where it was when the part holding it is replaced.
          const focused = document.activeElement && el.contains(document.activeElement) ? document.activeElement.id : null;
          el.innerHTML = html;
          if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
          if (status && added > 0) {
            status.textContent = added + ' new alert' + (added === 1 ? '' : 's') + ' at ' + new Date().toISOString().slice(11, 19) + ' UTC';
          }
        })
        .catch(() => { if (status) status.textContent = 'Live updates paused: reload the page.'; });
    }
  }
  function later() { if (!timer) timer = setTimeout(refresh, 250); }
  const mine = live.map((el) => el.dataset.alert).filter(Boolean);
  const source = new EventSource('/api/stream');
  source.addEventListener('alert', () => { pendingAlerts += 1; if (!mine.length) later(); });
  source.addEventListener('state', (e) => {
    if (!mine.length) { later(); return; }
    try { if (mine.includes(JSON.parse(e.data).id)) later(); } catch (_) { /* not ours */ }
  });
  source.addEventListener('lagged', later);
})();
