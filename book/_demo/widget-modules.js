// Widget code loads from this site (copied by offline_assets.py), never from a CDN.
// Runs after RequireJS and before the widget manager, which asks RequireJS for modules by name.
(function () {
  "use strict";
  const vendor = document.currentScript.src.replace(/_demo\/[^/]*$/, "_vendor/");
  window.requirejs.config({
    paths: {
      // The manager's bundle defines these modules itself, and each finds its icon fonts beside the
      // address RequireJS gives its name: map them all to the folder that holds the fonts.
      "@jupyter-widgets": vendor + "html-manager",
      "@jupyter-widgets/html-manager/dist": vendor + "html-manager",
      // Third-party widgets used in the chapters.
      ipycanvas: vendor + "widgets/ipycanvas",
    },
  });
})();
