// Starts Swagger UI on /docs (a static file: the page's CSP allows no inline script).
// On a server without API tokens nothing needs authorizing, so the document is shown without its
// security requirements: no padlocks, no Authorize button (/openapi.json itself stays as written).
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  var options = {
    domNode: root,
    deepLinking: false,          // its links sit inside each operation's button (nested controls, axe)
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,          // no calls to validator.swagger.io: the page stays on this server
    tryItOutEnabled: false,
    persistAuthorization: false,
    defaultModelsExpandDepth: 0,
    docExpansion: "list"
  };

  function withoutSecurity(doc) {
    delete doc.security;
    if (doc.components) delete doc.components.securitySchemes;
    Object.keys(doc.paths || {}).forEach(function (path) {
      var item = doc.paths[path];
      Object.keys(item).forEach(function (method) {
        if (item[method] && typeof item[method] === "object") delete item[method].security;
      });
    });
    return doc;
  }

  function start(extra) {
    Object.keys(extra).forEach(function (key) { options[key] = extra[key]; });
    window.ui = SwaggerUIBundle(options);
  }

  if (root.dataset.tokens === "off") {
    fetch(root.dataset.specUrl)
      .then(function (response) { return response.json(); })
      .then(function (doc) { start({ spec: withoutSecurity(doc) }); })
      .catch(function () { start({ url: root.dataset.specUrl }); });
  } else {
    start({ url: root.dataset.specUrl });
  }
})();
