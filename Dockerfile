# obsd as a container image for the DaemonSet in deploy/kubernetes (hostPID,
# root with CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH; not
# privileged). The BPF objects are committed (bpf2go output), so building
# needs only Go.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY bpf ./bpf
COPY cmd ./cmd
COPY internal ./internal
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/obsd ./cmd/obsd

# Static binary, no shell: the image is obsd and CA certificates only.
FROM gcr.io/distroless/static-debian12:nonroot AS run
COPY --from=build /out/obsd /obsd
# obsd attaches uprobes and reads /proc of other processes: it runs as root
# with hostPID and the capabilities the DaemonSet grants.
USER 0:0
EXPOSE 9400
ENTRYPOINT ["/obsd"]
