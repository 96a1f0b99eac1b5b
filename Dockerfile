# obsd's container image, for the DaemonSet in deploy/kubernetes (hostPID,
# root with CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH; not
# privileged). `make image` builds it (scripts/image.sh: buildah, or docker
# when an engine runs) from a context it stages: the static obsd binary
# (CGO_ENABLED=0, so the committed BPF objects are all it needs beside Go)
# and the build host's CA bundle, for OTLP over TLS. Nothing is pulled: the
# image is those two files on scratch, what a distroless static base would
# add beyond them (passwd, tzdata) obsd does not use.
FROM scratch
COPY obsd /obsd
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# obsd attaches uprobes and reads /proc of other processes: it runs as root
# with hostPID and the capabilities the DaemonSet grants.
USER 0:0
EXPOSE 9400
ENTRYPOINT ["/obsd"]
