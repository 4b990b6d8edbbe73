import { request } from "undici";
import { ElsewhereFill, FillFollowerError, type FillTicket, type PublishedFile } from "./fill-follower.ts";
import { StorageError, type Fallback } from "./fill.ts";

// A blob fill that another replica runs (cluster.redis), followed over HTTP.
//
// The replica running a fill puts its own address and a token in the flight's ticket; a client
// here streams the bytes from that replica's /_regmirror/fills/<hex> (http/fills.ts), which
// serves them from its BlobFill as they land, the last byte only once the digest is verified.
// So a latecomer on any replica gets bytes while the fill runs, and one upstream GET serves the
// whole cluster. When the owner no longer runs the fill (it is over, or the owner died), the
// flight's end says which: "done" and the rest comes from the shared storage; "failed" and the
// client's connection is cut, never finished with wrong bytes.

/** Where the replica running a fill serves it: on the ticket, for the other replicas. */
export interface FillOrigin {
  /** The replica's cluster member id: a replica never follows itself over HTTP. */
  member: string;
  url: string;
  token: string;
}

export class RemoteFill extends ElsewhereFill {
  constructor(
    private readonly hex: string,
    private readonly origin: FillOrigin,
    ticket: FillTicket,
    ended: Promise<"done" | "failed">,
    openPublished: () => Promise<PublishedFile | undefined>,
    fallback: Fallback,
    following?: (delta: 1 | -1) => void,
  ) {
    super(ticket, ended, openPublished, fallback, following);
  }

  protected async *read(start: number, end: number | undefined): AsyncGenerator<Buffer> {
    if (this.error instanceof StorageError) {
      yield* this.fallback(start, end);
      return;
    }
    let pos = start;
    const stop = end === undefined ? this.size : end + 1;
    const res = await request(`${this.origin.url}/_regmirror/fills/${this.hex}`, {
      headers: {
        authorization: `Bearer ${this.origin.token}`,
        range: `bytes=${start}-${end ?? ""}`,
      },
    }).catch(() => undefined);
    if (res && (res.statusCode === 200 || res.statusCode === 206)) {
      try {
        for await (const chunk of res.body) {
          pos += (chunk as Buffer).length;
          yield chunk as Buffer;
        }
      } catch {
        // The owner went away mid-transfer, or its fill failed: the flight's end tells which.
      }
      if (stop !== undefined && pos >= stop) return;
    } else {
      await res?.body.dump().catch(() => undefined);
    }
    // The owner does not (or no longer) serve it: over, or gone. Done means it is stored.
    await this.ended;
    if (this.state !== "done") throw this.error ?? new FillFollowerError();
    const file = await this.openPublished();
    if (!file) throw new Error("the blob left the cache as it landed");
    try {
      const last = (end ?? file.size - 1) + 1;
      const buf = Buffer.allocUnsafe(1024 * 1024);
      while (pos < last) {
        const { bytesRead } = await file.read(buf, 0, Math.min(buf.length, last - pos), pos);
        if (bytesRead === 0) throw new Error("the blob is shorter than the range asked for");
        pos += bytesRead;
        yield Buffer.from(buf.subarray(0, bytesRead));
      }
    } finally {
      await file.close();
    }
  }
}
