/* On the pages that embed ipywidgets, loaded between require.js and the widgets' html-manager bundle (_config.yml,
   nb_ipywidgets_js). Two fixes for that bundle on this book's pages:

   1. Its modules are named AMD modules defined in one file, so require.js places them beside the page
      (book/@jupyter-widgets/base.js, ...) and the icon fonts webpack loads from "the module's folder" 404.
      Point those names at the bundle's own folder (this tag's data-html-manager), where the fonts are.
   2. It typesets widget labels with MathJax 2's API, MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]),
      whenever window.MathJax exists; the book loads MathJax 3, which has no Hub: "Cannot read properties of
      undefined (reading 'Queue')". Give MathJax 3 that one entry point, forwarding to MathJax.typesetPromise. */
(function () {
  "use strict";
  var script = document.currentScript;
  var dist = script && script.getAttribute("data-html-manager");
  if (dist && window.require && typeof window.require.config === "function") {
    var paths = {};
    ["base", "controls", "base7", "controls7", "output", "html-manager"].forEach(function (name) {
      paths["@jupyter-widgets/" + name] = dist + name;
    });
    paths["@jupyter-widgets/html-manager/dist/libembed-amd"] = dist + "libembed-amd";
    window.require.config({paths: paths});
  }

  function typeset(element) {
    var mathjax = window.MathJax;
    if (!mathjax || typeof mathjax.typesetPromise !== "function") return;  // not MathJax 3, or not loaded yet
    var ready = (mathjax.startup && mathjax.startup.promise) || Promise.resolve();
    ready.then(function () { return mathjax.typesetPromise(element ? [element] : undefined); })
      .catch(function (error) { console.warn("vaelab-widgets.js: MathJax could not typeset a widget label", error); });
  }
  var hub = {
    Queue: function () {
      for (var i = 0; i < arguments.length; i++) {
        var job = arguments[i];
        if (Array.isArray(job) && job[0] === "Typeset") typeset(job[2]);
      }
    }
  };
  function lendHub() {
    var mathjax = window.MathJax;
    if (mathjax && typeof mathjax === "object" && !("Hub" in mathjax)) {
      // not enumerable: MathJax 3 copies its configuration object's own keys and must not see this one
      Object.defineProperty(mathjax, "Hub", {value: hub, configurable: true});
    }
  }
  lendHub();  // the configuration object, if MathJax 3 has not replaced it yet
  document.addEventListener("DOMContentLoaded", lendHub);  // MathJax 3 itself (a deferred script: loaded by now)
})();
