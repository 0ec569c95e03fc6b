// Runs in the browser: marks the page as scripted and records what the
// style sheet and the picture (both from the bundle) did, for the e2e test.
document.getElementById("title").dataset.loaded = "yes";
document.body.dataset.bg = getComputedStyle(document.body).backgroundColor;
window.addEventListener("load", () => {
  document.body.dataset.img = String(document.getElementById("dot").naturalWidth);
});
