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

export { UsageError, describeError } from "../maintenance/errors.ts";
