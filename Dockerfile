# syntax=docker/dockerfile:1
# The operator's image: built with the Rust toolchain image, run as a non-root
# user on Debian slim with git (pushes go through the git CLI), openssh-client
# (ssh:// remotes) and CA certificates (https:// remotes).
#
#   docker build -t gitops-reverser .            # or: buildah bud, podman build
#
# The base images are arguments so that a mirror or a pinned digest can be
# used. Keep both on the same Debian release: the binary links against glibc.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build outputs between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gitops-reverser \
 && install -D -m 0755 target/release/gitops-reverser /out/gitops-reverser

FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates git openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 gitops-reverser \
 && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin gitops-reverser \
 && install -d -o 65532 -g 65532 -m 0700 /var/lib/gitops-reverser
COPY --from=build /out/gitops-reverser /usr/local/bin/gitops-reverser
# Numeric, so that runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
ENV GITOPS_REVERSER_DATA_DIR=/var/lib/gitops-reverser \
    HOME=/tmp
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gitops-reverser"]
CMD ["run"]
