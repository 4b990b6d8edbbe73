import { Readable } from "node:stream";
import { GetObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type { ObjectReader } from "./driver.ts";

// An object opened on S3 (s3-driver.ts). Nothing is held open between calls: each read and each
// stream is one ranged GetObject, so there is no descriptor to take over (no takeDescriptor) and
// an evicted object can cut a response short, unlike on the filesystem. close() aborts what is
// still in flight, so a caller that gives up does not leave a download running.

export interface S3Object {
  client: S3Client;
  bucket: string;
  /** The full object key, prefix included. */
  objectKey: string;
  /** The key as the caller named it, for messages. */
  key: string;
  /** Maps an SDK failure to a StorageUnavailableError (s3-driver.ts). */
  fail(op: string, err: unknown): Error;
}

const STREAM_HIGH_WATER = 256 * 1024;

export class S3Reader implements ObjectReader {
  private readonly aborter = new AbortController();

  constructor(
    private readonly obj: S3Object,
    readonly size: number,
  ) {}

  async read(
    buffer: Buffer,
    offset: number,
    length: number,
    position: number,
  ): Promise<{ bytesRead: number }> {
    const end = Math.min(position + length, this.size) - 1;
    if (end < position) return { bytesRead: 0 };
    try {
      const body = await this.get(position, end, this.aborter.signal);
      const bytes = await body.transformToByteArray();
      // A short body would be a torn read: the caller trusts bytesRead up to EOF.
      if (bytes.length !== end - position + 1) {
        throw new Error(`ranged GET gave ${bytes.length} bytes, expected ${end - position + 1}`);
      }
      buffer.set(bytes, offset);
      return { bytesRead: bytes.length };
    } catch (err) {
      throw this.obj.fail(`read ${this.obj.key}`, err);
    }
  }

  /** The GET starts on the first read, so a stream nobody consumes costs no request. */
  stream(start: number, end: number): Readable {
    if (end < start) return Readable.from([], { objectMode: false });
    const expected = end - start + 1;
    const mine = new AbortController();
    const signal = AbortSignal.any([this.aborter.signal, mine.signal]);
    const fail = (err: unknown): Error => this.obj.fail(`stream ${this.obj.key}`, err);
    let body: Readable | undefined;
    let started = false;
    let received = 0;
    const out = new Readable({
      highWaterMark: STREAM_HIGH_WATER,
      read: () => {
        if (started) {
          body?.resume();
          return;
        }
        started = true;
        this.get(start, end, signal).then(
          (b) => {
            body = b as unknown as Readable;
            if (out.destroyed) {
              body.destroy();
              return;
            }
            body.on("data", (chunk: Buffer) => {
              received += chunk.length;
              if (!out.push(chunk)) body?.pause();
            });
            body.on("end", () => {
              if (received === expected) out.push(null);
              else out.destroy(fail(new Error(`ranged GET gave ${received} bytes, expected ${expected}`)));
            });
            body.on("error", (err) => out.destroy(fail(err)));
          },
          (err: unknown) => out.destroy(fail(err)),
        );
      },
      destroy: (err, cb) => {
        mine.abort();
        body?.destroy();
        cb(err);
      },
    });
    return out;
  }

  /** Aborts streams and reads still open; the contract says none should be by now. */
  close(): Promise<void> {
    this.aborter.abort();
    return Promise.resolve();
  }

  private async get(start: number, end: number, abortSignal: AbortSignal) {
    const res = await this.obj.client.send(
      new GetObjectCommand({
        Bucket: this.obj.bucket,
        Key: this.obj.objectKey,
        Range: `bytes=${start}-${end}`,
      }),
      { abortSignal },
    );
    if (res.Body === undefined) throw new Error("GetObject answered without a body");
    return res.Body;
  }
}
