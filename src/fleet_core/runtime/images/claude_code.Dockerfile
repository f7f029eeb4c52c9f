# Claude Code: Node.js >= 20 from the npm registry (the npm package `node`; Debian 12 ships 18).
ARG BASE=fleet-base:bookworm
FROM ${BASE}
USER root
RUN apt-get update && apt-get install -y --no-install-recommends npm && rm -rf /var/lib/apt/lists/* \
 && npm install -g node@22 && npm install -g @anthropic-ai/claude-code && npm cache clean --force
RUN useradd --uid 1000 --create-home --home-dir /home/agent --shell /bin/sh agent
ENV HOME=/home/agent
USER 1000:1000
WORKDIR /work
