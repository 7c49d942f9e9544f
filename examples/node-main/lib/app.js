// Runs as `node lib/app.js`, the package's main, since package.json has no start script.
const http = require("http");

const fib = (n) => (n < 2 ? n : fib(n - 1) + fib(n - 2));
http
  .createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end(`Hello from Node.js ${process.version}: fib(20) = ${fib(20)}\n`);
  })
  .listen(process.env.PORT || 5000);
