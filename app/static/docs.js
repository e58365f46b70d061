// Starts Swagger UI (vendored, served from /api/docs/assets) on the API's OpenAPI document.
// A file of its own, not an inline script: the Content-Security-Policy allows scripts from 'self' only.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    persistAuthorization: false,
    validatorUrl: null,
  });
});
