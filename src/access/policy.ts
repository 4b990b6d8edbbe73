// Which repositories clients may pull, pure. Patterns are globs where * matches any run of
// characters (slashes included), tested against the repository ("library/alpine") and against
// the registry-qualified name ("ghcr.io/org/img"). Deny wins; an empty allow list allows all.

export class RepoPolicy {
  private readonly allow: RegExp[];
  private readonly deny: RegExp[];

  constructor(allow: readonly string[], deny: readonly string[]) {
    this.allow = allow.map(glob);
    this.deny = deny.map(glob);
  }

  permits(upstream: string, repo: string): boolean {
    const names = [repo, `${upstream}/${repo}`];
    const hit = (res: RegExp[]) => res.some((re) => names.some((n) => re.test(n)));
    if (hit(this.deny)) return false;
    return this.allow.length === 0 || hit(this.allow);
  }
}

function glob(pattern: string): RegExp {
  const escaped = pattern.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`^${escaped.join(".*")}$`);
}
