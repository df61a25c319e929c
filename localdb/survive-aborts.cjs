// Preloaded into dynalite (storage/localserver.py): dynalite throws from a request's
// 'error' handler (node_modules/dynalite/index.js: `req.on('error', function (err) {
// throw err })`), so one client killed in the middle of sending a request (a worker
// SIGKILLed mid-call, as the crash tests do) took the whole server down. DynamoDB does
// not; this drops that one request and keeps serving. Any other error still stops it.
"use strict";

process.on("uncaughtException", (err) => {
  if (err && (err.code === "ECONNRESET" || err.message === "aborted")) {
    console.error(`dynalite: a client aborted its request (${err.message}); still serving`);
    return;
  }
  console.error(err);
  process.exit(1);
});
