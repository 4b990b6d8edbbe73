import cliProgress from "cli-progress";
import { formatBytes, out, plural } from "./output.ts";
import type { ImageProgress, WarmProgress, WarmResult } from "../maintenance/warm.ts";

// How `warm` shows its progress. On a terminal: one bar per image (bytes and blobs) on stderr,
// and the result lines on stdout once the bars are done (lines printed between redraws would
// tear them). Otherwise (a pipe, a CI log): no bars, one result line per image as it finishes.

/**
 * `names`: every image that will be shown, so that the bars line up. `lines`: print a result line
 * per warmed image (not with --json, where stdout is the one JSON document at the end).
 */
export function createProgress(bars: boolean, names: string[], lines: boolean): WarmProgress {
  return bars ? new BarProgress(Math.max(0, ...names.map((n) => n.length)), lines) : new LineProgress(lines);
}

/** "warmed alpine:3.20: 6 blobs, 7.4 MiB"; failures are reported on stderr by the command. */
function resultLine(r: WarmResult): string | undefined {
  return r.ok ? `warmed ${r.image}: ${plural(r.blobs, "blob")}, ${formatBytes(r.bytes)}` : undefined;
}

class LineProgress implements WarmProgress {
  constructor(private readonly lines: boolean) {}

  image(): ImageProgress {
    return {
      total: () => undefined,
      bytes: () => undefined,
      blobDone: () => undefined,
      end: (r) => {
        const line = this.lines ? resultLine(r) : undefined;
        if (line !== undefined) out(line);
      },
    };
  }
  finish(): void {}
}

class BarProgress implements WarmProgress {
  private readonly multi = new cliProgress.MultiBar(
    {
      stream: process.stderr,
      format: "{image} [{bar}] {percentage}% | {done} / {size} | {blobsDone}/{blobs} blobs",
      barsize: 24,
      // A hidden cursor would stay hidden if warm is interrupted (Ctrl-C) mid-draw.
      hideCursor: false,
      clearOnComplete: false,
      stopOnComplete: false,
      // Redraw at most 10 times a second: a fast local mirror would otherwise spend its time drawing.
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  private readonly held: string[] = [];

  constructor(
    private readonly nameWidth: number,
    private readonly lines: boolean,
  ) {}

  image(name: string): ImageProgress {
    const bar = this.multi.create(1, 0, {
      image: name.padEnd(this.nameWidth),
      done: "0 B",
      size: "?",
      blobsDone: 0,
      blobs: "?",
    });
    let value = 0;
    let blobsDone = 0;
    return {
      total: (bytes, blobs) => {
        // A zero total would show NaN%; an image of only empty blobs is "done" at 1 of 1.
        bar.setTotal(Math.max(bytes, 1));
        bar.update(value, { size: formatBytes(bytes), blobs });
      },
      bytes: (n) => {
        value += n;
        bar.update(value, { done: formatBytes(value) });
      },
      blobDone: () => {
        blobsDone++;
        bar.update(value, { blobsDone });
      },
      end: (r) => {
        const line = this.lines ? resultLine(r) : undefined;
        if (line !== undefined) this.held.push(line);
        bar.stop();
      },
    };
  }

  finish(): void {
    this.multi.stop();
    for (const line of this.held) out(line);
  }
}
