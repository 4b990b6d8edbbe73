// The two limits of a cache fill, which outlives the client that started it:
//
// - a stall limit (cache.fillTimeout): no byte from the upstream for this long, and the fill is
//   given up. It is not a deadline: a 4 GB layer at 12 MB/s takes as long as it needs.
// - an abandonment limit (cache.abandonedFillTimeout): once no client follows the fill any more,
//   it goes on for at most this long (a latecomer may still come and use it).
//
// Plain timers kept on this object, refreshed in place, and one AbortController: on Node 20 an
// AbortSignal.timeout() inside AbortSignal.any() can be garbage-collected before it fires, and a
// total deadline cut healthy downloads.

export class FillAbortedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FillAbortedError";
  }
}

export interface FillWatchOptions {
  stallMs: number;
  abandonedMs: number;
  /** The process is shutting down: stop at once. */
  shutdown?: AbortSignal;
}

export class FillWatch {
  private readonly controller = new AbortController();
  private readonly stall: NodeJS.Timeout;
  private abandoned: NodeJS.Timeout | undefined;
  private readers = 0;
  private disposed = false;
  /** The upstream has answered: from now on, nobody following means abandoned. */
  private answered = false;
  private readonly onShutdown = () => this.abort(new FillAbortedError("the mirror is shutting down"));

  constructor(private readonly opts: FillWatchOptions) {
    this.stall = setTimeout(
      () => this.abort(new FillAbortedError(`no byte from the upstream for ${opts.stallMs} ms`)),
      opts.stallMs,
    );
    if (opts.shutdown?.aborted) this.onShutdown();
    else opts.shutdown?.addEventListener("abort", this.onShutdown, { once: true });
  }

  /** Aborted when the fill must stop; hand it to the upstream request. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Bytes arrived from the upstream. */
  progress(): void {
    if (!this.signal.aborted) this.stall.refresh();
  }

  /**
   * The upstream answered and the fill begins. Until then the clients wait for the headers (and
   * only the stall limit applies); from now on they must join, or the fill is abandoned.
   */
  answer(): void {
    this.answered = true;
    if (this.readers === 0) this.startAbandoned();
  }

  /** A client started following the fill. */
  joined(): void {
    this.readers++;
    if (this.abandoned) clearTimeout(this.abandoned);
    this.abandoned = undefined;
  }

  /** A client stopped following the fill (done or gone). */
  left(): void {
    this.readers--;
    if (this.readers === 0) this.startAbandoned();
  }

  /** The fill is over, whatever its outcome: the timers go. */
  dispose(): void {
    this.disposed = true;
    clearTimeout(this.stall);
    if (this.abandoned) clearTimeout(this.abandoned);
    this.abandoned = undefined;
    this.opts.shutdown?.removeEventListener("abort", this.onShutdown);
  }

  private startAbandoned(): void {
    if (!this.answered || this.disposed || this.signal.aborted) return;
    this.abandoned = setTimeout(
      () => this.abort(new FillAbortedError(`no client followed the fill for ${this.opts.abandonedMs} ms`)),
      this.opts.abandonedMs,
    );
  }

  private abort(reason: Error): void {
    if (this.signal.aborted) return;
    this.dispose();
    this.controller.abort(reason);
  }
}
