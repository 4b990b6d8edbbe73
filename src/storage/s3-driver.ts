import { createReadStream } from "node:fs";
import { rm } from "node:fs/promises";
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type BucketLocationConstraint,
  type HeadObjectCommandOutput,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { StorageUnavailableError, type Debris, type ObjectInfo, type StorageDriver } from "./driver.ts";
import { S3Reader } from "./s3-reader.ts";

// The S3 driver: a key is an object key below `prefix` in one bucket (keys.ts draws the layout).
// S3 makes a PUT visible whole or not at all, so put() is atomic as it stands, and publish()
// is a (multipart) upload that shows nothing under the key until it completes; an interrupted
// one is debris (sweepDebris). Readers hold nothing open: each read is one ranged GET
// (s3-reader.ts).
//
// Failures: a missing object is `undefined` where the contract says so; anything else (network,
// timeout, 403, 5xx, a missing bucket) is a StorageUnavailableError, which the mirror answers
// with a 503, never with a miss. No failed state is cached: the next call tries again.

export interface S3DriverOptions {
  bucket: string;
  /** "" or ends with "/" (config normalises it); every key goes below it. */
  prefix: string;
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
  accessKeyId?: string;
  secretAccessKey?: string;
  /** ListObjectsV2 MaxKeys; tests set it small to exercise pagination. Default 1000. */
  pageSize?: number;
}

const PART_SIZE = 8 * 1024 * 1024;
const PART_QUEUE = 4;
const REDIRECT_TTL_S = 20 * 60;
/** /readyz must answer while an endpoint is black-holed (two 3 s connection attempts). */
const PROBLEM_TIMEOUT_MS = 4500;

/**
 * A missing object, which the contract makes `undefined`. A GET says so by name; a 404 without
 * it (a missing bucket, a proxy, an endpoint that is no S3) is storage that is not there. A HEAD
 * has no body to name anything, so its bare 404 ("NotFound") has to count as missing.
 */
function isMissing(err: unknown, head = false): boolean {
  const name = (err as { name?: string } | undefined)?.name;
  return name === "NoSuchKey" || (head && name === "NotFound");
}

/** One line on why an SDK call failed: its message, else its code or name, and the HTTP status. */
function reasonOf(err: unknown): string {
  const e = err as {
    name?: string;
    message?: string;
    code?: string;
    $metadata?: { httpStatusCode?: number };
  };
  const text = e?.message || e?.code || e?.name || String(err);
  const status = e?.$metadata?.httpStatusCode;
  return status !== undefined && !text.includes(String(status)) ? `${text} (HTTP ${status})` : text;
}

export class S3Driver implements StorageDriver {
  readonly kind = "s3";
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly region: string;
  private readonly where: string;
  private readonly pageSize: number;

  constructor(opts: S3DriverOptions) {
    this.bucket = opts.bucket;
    this.prefix = opts.prefix;
    this.pageSize = opts.pageSize ?? 1000;
    this.region = opts.region || process.env.AWS_REGION || "us-east-1";
    this.where = opts.endpoint || `AWS ${this.region}`;
    this.client = new S3Client({
      region: this.region,
      forcePathStyle: opts.forcePathStyle ?? false,
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      ...(opts.accessKeyId && opts.secretAccessKey
        ? { credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey } }
        : {}),
      // Newer SDKs send aws-chunked bodies with trailing CRCs by default; Ceph RGW (and other
      // S3-compatible servers) refuse them with 411.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      // RGW waits for the body before it answers `Expect: 100-continue`: large PUTs stall.
      expectContinueHeader: false,
      // An unreachable endpoint must fail in seconds (a 503, a /readyz answer), not minutes.
      // socketTimeout is the idle timeout: a stalled transfer fails, a slow one does not.
      requestHandler: { connectionTimeout: 3000, socketTimeout: 30_000 },
      maxAttempts: 2,
    });
  }

  /** The StorageUnavailableError for a failed `op`: the one place SDK errors are translated. */
  private fail(op: string, err: unknown): Error {
    if (err instanceof StorageUnavailableError) return err;
    return new StorageUnavailableError(
      `S3 ${op} in bucket ${this.bucket} at ${this.where}: ${reasonOf(err)}`,
      {
        cause: err,
      },
    );
  }

  private objectKey(key: string): string {
    return this.prefix + key;
  }

  async init(opts: { debrisAgeMs?: number } = {}): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      if (!isMissing(err, true)) throw this.fail("init", err);
      await this.createBucket();
    }
    if (opts.debrisAgeMs !== undefined) await this.sweepDebris(opts.debrisAgeMs, false);
  }

  private async createBucket(): Promise<void> {
    // Outside us-east-1 S3 wants the region named again.
    const config =
      this.region === "us-east-1"
        ? undefined
        : { LocationConstraint: this.region as BucketLocationConstraint };
    try {
      await this.client.send(
        new CreateBucketCommand({ Bucket: this.bucket, CreateBucketConfiguration: config }),
      );
    } catch (err) {
      // Another replica may have created it a moment ago; if we can use it now, that is enough.
      try {
        await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      } catch {
        throw this.fail("create bucket", err);
      }
    }
  }

  async get(key: string): Promise<Buffer | undefined> {
    try {
      const res = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }),
      );
      const bytes = await res.Body!.transformToByteArray();
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw this.fail(`get ${key}`, err);
    }
  }

  async put(key: string, data: Buffer | string): Promise<void> {
    const body = typeof data === "string" ? Buffer.from(data) : data;
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.objectKey(key),
          Body: body,
          ContentLength: body.length,
        }),
      );
    } catch (err) {
      throw this.fail(`put ${key}`, err);
    }
  }

  private async head(op: string, key: string): Promise<HeadObjectCommandOutput | undefined> {
    try {
      return await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
    } catch (err) {
      if (isMissing(err, true)) return undefined;
      throw this.fail(`${op} ${key}`, err);
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const h = await this.head("stat", key);
    return h && { key, size: h.ContentLength ?? 0, modifiedMs: h.LastModified?.getTime() ?? 0 };
  }

  async open(key: string): Promise<S3Reader | undefined> {
    const h = await this.head("open", key);
    if (!h) return undefined;
    const fail = (op: string, err: unknown): Error => this.fail(op, err);
    return new S3Reader(
      { client: this.client, bucket: this.bucket, objectKey: this.objectKey(key), key, fail },
      h.ContentLength ?? 0,
    );
  }

  async publish(localFile: string, key: string): Promise<void> {
    try {
      // Small files go up as one PutObject, larger ones as parts; either way nothing is under
      // `key` until the last request completes, and a failed multipart upload is aborted.
      const upload = new Upload({
        client: this.client,
        params: { Bucket: this.bucket, Key: this.objectKey(key), Body: createReadStream(localFile) },
        partSize: PART_SIZE,
        queueSize: PART_QUEUE,
        leavePartsOnError: false,
      });
      await upload.done();
    } catch (err) {
      throw this.fail(`publish ${key}`, err);
    } finally {
      await rm(localFile, { force: true });
    }
  }

  async delete(key: string): Promise<boolean> {
    if (!(await this.head("delete", key))) return false;
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
      return true;
    } catch (err) {
      throw this.fail(`delete ${key}`, err);
    }
  }

  async *list(prefix: string): AsyncGenerator<ObjectInfo> {
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.objectKey(prefix),
            MaxKeys: this.pageSize,
            ContinuationToken: token,
          }),
        );
      } catch (err) {
        throw this.fail(`list ${prefix}`, err);
      }
      // S3 lists in UTF-8 byte order, and a continuation token never repeats a key.
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined) continue;
        yield {
          key: o.Key.slice(this.prefix.length),
          size: o.Size ?? 0,
          modifiedMs: o.LastModified?.getTime() ?? 0,
        };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  /** Presigning is local: no request, so it cannot fail for an unreachable endpoint. */
  async redirectURL(key: string): Promise<string> {
    return getSignedUrl(
      this.client,
      new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }),
      {
        expiresIn: REDIRECT_TTL_S,
      },
    );
  }

  /** Multipart uploads under our prefix begun before `olderThanMs` ago: a crashed publish. */
  async sweepDebris(olderThanMs: number, dryRun: boolean): Promise<Debris[]> {
    const cutoff = Date.now() - olderThanMs;
    const found: Debris[] = [];
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    try {
      do {
        const page = await this.client.send(
          new ListMultipartUploadsCommand({
            Bucket: this.bucket,
            Prefix: this.prefix || undefined,
            KeyMarker: keyMarker,
            UploadIdMarker: uploadIdMarker,
          }),
        );
        for (const u of page.Uploads ?? []) {
          if (u.Key === undefined || u.UploadId === undefined) continue;
          if ((u.Initiated?.getTime() ?? 0) > cutoff) continue;
          if (!dryRun) {
            await this.client.send(
              new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: u.Key, UploadId: u.UploadId }),
            );
          }
          found.push({ name: `upload ${u.Key.slice(this.prefix.length)}`, size: 0 });
        }
        const more = page.IsTruncated === true;
        keyMarker = more ? page.NextKeyMarker : undefined;
        uploadIdMarker = more ? page.NextUploadIdMarker : undefined;
      } while (keyMarker !== undefined);
    } catch (err) {
      throw this.fail("sweep uploads", err);
    }
    return found;
  }

  async problem(): Promise<string | undefined> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), {
        abortSignal: AbortSignal.timeout(PROBLEM_TIMEOUT_MS),
      });
      return undefined;
    } catch (err) {
      const reason = isMissing(err, true) ? "no such bucket" : reasonOf(err);
      return `S3 bucket ${this.bucket} at ${this.where}: ${reason}`;
    }
  }

  /** Closes the client's sockets; for tests and shutdown (not part of StorageDriver). */
  destroy(): void {
    this.client.destroy();
  }
}
