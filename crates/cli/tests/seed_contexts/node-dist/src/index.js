const ms = require("ms");
const http = require("http");
const port = process.env.PORT || 3000;
http
  .createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" });
    res.end("Merhaba, Multi-Stage Dockerfile ile kapsüllenmiş uygulama!");
  })
  .listen(port, () => console.log(`Sunucu ${port} portunda çalışıyor... (${ms(60000)})`));
