// The front-end's script: fills in the greeting once the page has loaded.
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("greeting").textContent =
    "Hello from a Node.js build served by nginx!";
});
