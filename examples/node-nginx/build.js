// The front-end build of the example: renders public/index.html with the
// app's script and styles from src/ into build/, as `npm run build` of a
// React app produces a static build/ directory for nginx to serve.
const fs = require("fs");
const path = require("path");

const out = path.join(__dirname, "build");
fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(path.join(out, "static"), { recursive: true });

const app = fs.readFileSync(path.join(__dirname, "src", "app.js"), "utf8");
const css = fs.readFileSync(path.join(__dirname, "src", "app.css"), "utf8");
// "Minify": drop comment lines and blank lines.
const minify = (text) =>
  text
    .split("\n")
    .filter((line) => line.trim() && !line.trim().startsWith("//"))
    .map((line) => line.trim())
    .join("\n");
fs.writeFileSync(path.join(out, "static", "app.js"), minify(app));
fs.writeFileSync(path.join(out, "static", "app.css"), minify(css));

const page = fs
  .readFileSync(path.join(__dirname, "public", "index.html"), "utf8")
  .replace("%BUILD_INFO%", `built with Node.js ${process.version}`);
fs.writeFileSync(path.join(out, "index.html"), page);
console.log(`build/: index.html, static/app.js, static/app.css (${process.version})`);
