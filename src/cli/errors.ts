// The exit-code contract every subcommand keeps, so that a shell script can branch on it:
//
//   0  done; nothing wrong found
//   1  the operation failed (mirror unreachable, an image could not be warmed, an I/O error),
//      or it found what it looks for (verify found corrupt content; purge REF matched nothing)
//   2  usage or configuration error: bad arguments, unknown options, an invalid config file
//
// Messages go to stderr, results (lines and --json) to stdout.

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** A mistake in what the user typed or configured; reported without a stack and exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** What the user should see for an error: the message, and the cause's when it adds something. */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? err.cause.message : undefined;
  return cause && !err.message.includes(cause) ? `${err.message}: ${cause}` : err.message;
}
