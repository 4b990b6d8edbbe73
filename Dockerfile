# syntax=docker/dockerfile:1
# regmirror container image: `docker build -t regmirror .` (see docs/running.md)

# --- build: compile src/ (TypeScript) into dist/ -----------------------------------------------
FROM node:20-bookworm-slim AS build
# A compiler for the sendfile(2) addon (native/sendfile.cc), built by npm's install script.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json binding.gyp ./
COPY native ./native
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# --- runtime: production dependencies, compiled output, default config -------------------------
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    REGMIRROR_CACHE_DIR=/var/lib/regmirror
WORKDIR /app

# A fixed numeric UID/GID, so Kubernetes' runAsNonRoot can check it and fsGroup can match it.
RUN groupadd --system --gid 10001 regmirror \
 && useradd --system --uid 10001 --gid regmirror --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin regmirror \
 && mkdir -p /var/lib/regmirror \
 && chown regmirror:regmirror /var/lib/regmirror

COPY package.json package-lock.json ./
# --ignore-scripts: the addon comes ready-built from the build stage (no compiler here).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY --from=build /app/build/Release/sendfile.node ./build/Release/sendfile.node
# Read from the working directory at start; override keys with REGMIRROR_* variables,
# or point REGMIRROR_CONFIG at another file.
COPY mirror.yml ./

USER 10001:10001
# Declared after the chown so that a new named volume starts out owned by regmirror.
VOLUME /var/lib/regmirror
EXPOSE 5555 5443

# No curl in slim images: ask node. Assumes the default listen port, 5555.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "require('node:http').get('http://127.0.0.1:5555/healthz', (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"]

# regmirror handles SIGTERM itself (graceful stop), so node can run as PID 1. Its shutdownTimeout
# (20s) exceeds docker stop's default 10s: run with --stop-timeout 30.
CMD ["node", "dist/main.js", "serve"]
