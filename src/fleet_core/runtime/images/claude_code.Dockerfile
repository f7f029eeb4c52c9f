# Claude Code: Node.js >= 20 from the npm registry (the npm package `node`; Debian 12 ships 18).
ARG BASE=fleet-base:bookworm
FROM ${BASE}
USER root
# Certificates to trust besides Debian's (`fleet image build --ca-bundle`; `ca/` may be empty).
COPY ca /usr/lib/fleet-ca
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
RUN mkdir -p /usr/local/share/ca-certificates/fleet \
 && find /usr/lib/fleet-ca -name '*.crt' -exec cp {} /usr/local/share/ca-certificates/fleet/ \; \
 && update-ca-certificates >/dev/null
RUN apt-get update && apt-get install -y --no-install-recommends npm && rm -rf /var/lib/apt/lists/* \
 && npm install -g node@22 && npm install -g @anthropic-ai/claude-code && npm cache clean --force
RUN useradd --uid 1000 --create-home --home-dir /home/agent --shell /bin/sh agent
ENV HOME=/home/agent
USER 1000:1000
WORKDIR /work
