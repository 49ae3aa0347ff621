// Swagger UI over /api-docs/openapi.json (swagger-ui-py's dist files). When the API
// needs a bearer token, ask once and share it with the dashboard (same sessionStorage
// key); it is sent as a header with the spec fetch and with every "Try it out" call.
(function () {
  "use strict";
  var TOKEN_KEY = "tproxy-monitoring-token";
  var SPEC = "/api-docs/openapi.json";

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  function start() {
    window.ui = SwaggerUIBundle({
      url: SPEC,
      dom_id: "#swagger-ui",
      deepLinking: true,
      requestInterceptor: function (req) {
        var t = token();
        if (t && !req.headers.Authorization) req.headers.Authorization = "Bearer " + t;
        return req;
      },
      onComplete: function () {
        if (token()) window.ui.preauthorizeApiKey("bearerAuth", token());
      }
    });
  }

  var headers = token() ? { Authorization: "Bearer " + token() } : {};
  fetch(SPEC, { headers: headers }).then(function (r) {
    if (r.status === 401) {
      var t = window.prompt("The monitoring API needs its bearer token (kept in this tab only):");
      if (t) sessionStorage.setItem(TOKEN_KEY, t.trim());
    }
  }).catch(function () {}).then(start);
})();
