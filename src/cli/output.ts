// Output conventions shared by the subcommands: results on stdout (plain lines, or one JSON
// document with --json), messages on stderr prefixed with the program name.

export function out(line: string): void {
  process.stdout.write(line + "\n");
}

export function note(message: string): void {
  process.stderr.write(`regmirror: ${message}\n`);
}

export function outJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

export { formatBytes, plural, shortDigest } from "../format.ts";
