// Apart from validate.ts so that a module that only reports a bad value (TLS files, the
// listeners) does not load the schema and zod with it: a worker gets its configuration already
// validated from the primary (worker.ts) and never loads either.

/** A configuration that cannot be used; each line names the key, the value and where it came from. */
export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(problems.join("\n"));
    this.name = "ConfigError";
    this.problems = problems;
  }
}
