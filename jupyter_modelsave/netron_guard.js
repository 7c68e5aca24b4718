// jupyter_modelsave: the first script of Netron's page (inlined by routes.netron_index; its
// sha256 is the only inline script the page's Content-Security-Policy allows).
//
// Netron opens the model named by the page's `#<url>` hash, else by its `?url=` parameter, and
// a `?gist=` id from api.github.com. This page only opens this server's own graphs:
// `<base_url>modelsave/staged/<id>/graph` and `<base_url>modelsave/download/<path>`, on this
// origin, with no query, credentials or encoded separators. Anything else is removed from the
// address before Netron reads it (Netron then shows its empty start page) and a notice says why.
// The CSP (`connect-src 'self'`) is what guarantees no other origin is fetched; this guard makes
// a crafted link fail visibly instead.
(function () {
  'use strict';
  var prefix = location.pathname.replace(/netron\/(index\.html)?$/, '');
  var allowed = /^(staged\/[0-9a-f]{32}\/graph|download\/[^?#]+)$/;

  function isOwnGraph(text) {
    var url;
    if (/[\\\u0000-\u001f]|%(2f|5c|00)/i.test(text)) {
      return false;
    }
    try {
      url = new URL(text, location.href);
    } catch (error) {
      return false;
    }
    return (
      url.origin === location.origin &&
      !url.username &&
      !url.password &&
      !url.search &&
      !url.hash &&
      url.pathname.indexOf(prefix) === 0 &&
      allowed.test(url.pathname.slice(prefix.length))
    );
  }

  function refused() {
    var params = new URLSearchParams(location.search);
    var hash = location.hash.replace(/^#/, '');
    var asked = [];
    if (hash) {
      asked.push(hash);
    }
    if (params.has('url')) {
      asked.push(params.get('url'));
    }
    if (params.has('gist')) {
      asked.push('gist ' + params.get('gist'));
      return asked;
    }
    return asked.every(isOwnGraph) ? [] : asked;
  }

  function notice(asked) {
    var box = document.createElement('div');
    box.id = 'jupyter-modelsave-refused';
    box.setAttribute('role', 'alert');
    box.textContent =
      'jupyter_modelsave did not open ' +
      asked.join(', ') +
      ': this viewer opens only the graphs of this Jupyter server.';
    box.style.cssText =
      'position:fixed;top:0;left:0;right:0;z-index:10;padding:8px;' +
      'background:#fdecea;color:#611a15;font:13px sans-serif;word-break:break-all';
    document.body.appendChild(box);
  }

  function check() {
    var asked = refused();
    if (asked.length) {
      history.replaceState(null, '', location.pathname);
      if (document.body) {
        notice(asked);
      } else {
        document.addEventListener('DOMContentLoaded', function () {
          notice(asked);
        });
      }
    }
  }

  check();
  window.addEventListener('hashchange', check);
})();
