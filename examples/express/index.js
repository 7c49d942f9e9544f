const express = require("express");

const app = express();
app.get("/", (_req, res) => res.send("Hello from Express on dynod\n"));
app.listen(process.env.PORT || 5000, () => console.log(`listening on ${process.env.PORT}`));
