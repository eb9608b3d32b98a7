# syntax=docker/dockerfile:1
# podvnet image: the agent (DaemonSet) and the CNI plugin it installs on the node.
# The BPF objects are committed (bpf2go), so the build needs Go only, no clang.

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.buildVersion=${VERSION}" \
      -o /out/podvnet-agent ./cmd/agent && \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.buildVersion=${VERSION}" \
      -o /out/podvnet ./cmd/plugin

# Static binaries: no shell or libc needed at run time.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/podvnet-agent /usr/local/bin/podvnet-agent
COPY --from=build /out/podvnet /opt/podvnet/bin/podvnet
# The agent needs CAP_BPF, CAP_NET_ADMIN (and CAP_SYS_ADMIN to mount bpffs); the
# DaemonSet grants them and runs it as root in the host network namespace.
USER 0:0
ENTRYPOINT ["/usr/local/bin/podvnet-agent"]
CMD ["run"]
