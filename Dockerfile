# boxgrid's image: the server, the Kubernetes executor and the staging containers of its task
# pods all run from it (deploy/helm/boxgrid). Build and try:
#
#   docker build -t boxgrid:0.1.0 .
#   docker run --rm boxgrid:0.1.0 --help
#   docker run -d -p 8470:8470 -v boxgrid-data:/data boxgrid:0.1.0 server --listen 0.0.0.0:8470
#
# NODE_IMAGE is the base of both stages: Node.js 20 on Debian bookworm (better-sqlite3's native
# module is built against its glibc). PREBUILT=true skips `npm ci` and the TypeScript build and
# takes dist/ and a production node_modules/ from the build context instead, built on a host of
# the same Node and glibc (test/deploy/image.test.ts does that: no registry or npm inside).
# Written for Docker's legacy builder as well as BuildKit (no syntax directive, no RUN mounts).
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
ARG PREBUILT=false
WORKDIR /src
COPY . .
# Then what only a compiler or a reader needs goes: type declarations, source maps and docs of
# the dependencies (half their files), and of better-sqlite3's build all but the module itself.
RUN set -e; \
    if [ "$PREBUILT" = true ]; then \
      for f in dist/src/cli/main.js node_modules/better-sqlite3/package.json; do \
        [ -e "$f" ] || { echo "PREBUILT=true needs $f in the build context" >&2; exit 1; }; \
      done; \
    else \
      apt-get update; \
      apt-get install -y --no-install-recommends python3 make g++; \
      rm -rf /var/lib/apt/lists/*; \
      npm_config_nodedir=/usr/local npm ci --no-audit --no-fund; \
      npm prune --omit=dev --no-audit --no-fund; \
    fi; \
    find node_modules -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \
      -o -name '*.md' -o -name '*.markdown' \) ! -iname 'licen[cs]e*' -exec rm -f {} +; \
    b=node_modules/better-sqlite3; \
    mv "$b/build/Release/better_sqlite3.node" /tmp/; \
    rm -rf "$b/build" "$b/deps" "$b/src"; \
    mkdir -p "$b/build/Release"; \
    mv /tmp/better_sqlite3.node "$b/build/Release/"

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    BOXGRID_DATA=/data/server
WORKDIR /app
COPY --from=build /src/package.json /src/package-lock.json /app/
COPY --from=build /src/bin /app/bin
COPY --from=build /src/dist/src /app/dist/src
COPY --from=build /src/node_modules /app/node_modules
# A user of its own (uid 10001, no login) and /data, the volume the server keeps its data dir
# under (/data/server: the server sets its data dir to mode 0700, which only its owner may).
RUN set -e; \
    echo 'boxgrid:x:10001:10001:boxgrid:/home/boxgrid:/usr/sbin/nologin' >> /etc/passwd; \
    echo 'boxgrid:x:10001:' >> /etc/group; \
    mkdir -p /home/boxgrid /data; \
    chown 10001:10001 /home/boxgrid /data; \
    chmod 0755 /app/bin/boxgrid.js; \
    ln -s /app/bin/boxgrid.js /usr/local/bin/boxgrid
USER 10001:10001
EXPOSE 8470
ENTRYPOINT ["node", "/app/bin/boxgrid.js"]
CMD ["--help"]
