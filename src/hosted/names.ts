// Which repository names are hosted here rather than mirrored, pure. A glob's * matches the
// characters of one path component and ** any run of them, slashes included, so "local/*" is
// "local/app" but not "local/a/b", and "team/**" is everything below team/.

export class HostedNames {
  private readonly res: RegExp[];

  constructor(globs: readonly string[]) {
    this.res = globs.map(globToRegExp);
  }

  get any(): boolean {
    return this.res.length > 0;
  }

  matches(name: string): boolean {
    return this.res.some((re) => re.test(name));
  }
}

function globToRegExp(glob: string): RegExp {
  let out = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*" && glob[i + 1] === "*") {
      out += ".*";
      i++;
    } else if (c === "*") out += "[^/]*";
    else out += c.replace(/[.+?^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${out}$`);
}
