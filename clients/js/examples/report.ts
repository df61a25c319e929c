// A typed use of the package: run a report, show its progress and its output stream,
// follow the connection, and tell errors apart. tests/deploy/test_js_package.py compiles
// it with `tsc --strict --noEmit` against the packed package.
import {
  ClientErrorCode,
  PROTOCOL_VERSION,
  type ConnectionState,
  type Progress,
  type RequestRecord,
  StreamerClient,
  StreamerError,
} from "streamer-client";

interface Report {
  rows: number;
  summary: string;
}

const speaks: "1.1" = PROTOCOL_VERSION;

export async function runReport(getToken: () => Promise<string>, signal: AbortSignal): Promise<Report> {
  const client = new StreamerClient("/ws", { getToken, heartbeatMs: 25_000, backoff: { maxMs: 10_000 } });
  client.addEventListener("state", (event) => {
    const state: ConnectionState = event.detail;
    console.log(`streamer ${speaks}: ${state}`);
  });
  client.addEventListener("error", (event) => console.warn(event.detail.code, event.detail.retryable));
  await client.connect();

  const log: string[] = [];
  try {
    return await client.request<Report>("generate_report", { duration_s: 5 }, {
      onProgress: (progress: Progress) => console.log(progress.percentage, progress.message),
      onOutput: (chunk, seq) => log.push(`${seq}: ${typeof chunk === "string" ? chunk : JSON.stringify(chunk)}`),
      signal,
      timeoutMs: 60_000,
    });
  } catch (error) {
    if (error instanceof StreamerError && error.code === ClientErrorCode.CANCELLED) {
      return { rows: 0, summary: "cancelled" };
    }
    throw error;
  } finally {
    client.close();
  }
}

export async function resumeAfterReload(client: StreamerClient, requestId: string, lastSeq: number): Promise<number> {
  const record: RequestRecord = await client.request("request.status", { request_id: requestId });
  if (record.status === "COMPLETED") return lastSeq;
  let seen = lastSeq;
  await client.resume<Report>(requestId, {
    afterSeq: lastSeq,
    onOutput: (_chunk, seq) => {
      seen = seq;
    },
  });
  return seen;
}
