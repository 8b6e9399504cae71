// The "build" of this tiny app: copy src/ into dist/ with a banner, the way a
// bundler would emit dist/index.js.
const fs = require("fs");
const path = require("path");
fs.mkdirSync("dist", { recursive: true });
for (const name of fs.readdirSync("src")) {
  const body = fs.readFileSync(path.join("src", name), "utf8");
  fs.writeFileSync(path.join("dist", name), "// built by build.js\n" + body);
}
